#!/usr/bin/perl

# The node image's entrypoint (scripts/node-entrypoint.sh), run here as the image runs it but
# against dist/: the config rendered from environment variables checks and runs in the
# foreground; a standalone node on a mounted table admits its broadcaster and serves HLS; a
# bad variable stops it with a clear message; SIGQUIT (the image's STOPSIGNAL) ends it.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use POSIX ();
use lib 't/lib';
use Mesh::Test qw(free_port publish probe wait_until reap spawn sha256_hex viewer_token);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

use Cwd qw(abs_path);
sub slurp { open my $f, '<', $_[0] or return ''; local $/; <$f> }

my $prefix = abs_path('dist');
my $state = tempdir('mesh-entry-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
chmod 0755, $state;
mkdir "$state/state";
open my $fh, '>', "$state/state/table.json" or die;
print $fh qq({"version": 1, "publish": {"cam1": {"key_sha256": "@{[sha256_hex('k1')]}"}}, "viewer_secret": "s"});
close $fh;
my ($rtmp, $http) = (free_port(), free_port());

sub entry {
	my (%env) = @_;
	local %ENV = (%ENV, MESH_PREFIX => $prefix, MESH_STATE_DIR => $state, ERROR_LOG => "$state/error.log", %env);
	return spawn('bash', 'scripts/node-entrypoint.sh');
}

# A missing or malformed variable: exit 1 at once, one line on stderr naming the variable, and
# nothing started nor rendered (no nginx.conf, no key file).
sub entry_fails {
	my ($env, $var, $name) = @_;
	my $dir = tempdir('mesh-entry-bad-XXXXXX', TMPDIR => 1, CLEANUP => 1);
	my $err = "$dir/stderr";
	my $t0 = time;
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		%ENV = (PATH => $ENV{PATH}, MESH_PREFIX => $prefix, MESH_STATE_DIR => "$dir/node", NGINX_PORT => $rtmp, HTTP_PORT => $http, %$env);
		open STDIN, '<', '/dev/null';
		open STDOUT, '>', '/dev/null';
		open STDERR, '>', $err;
		exec 'bash', 'scripts/node-entrypoint.sh' or POSIX::_exit(127);
	}
	my $st = reap($pid, 10);
	kill 'KILL', $pid unless defined $st;
	my @lines = split /\n/, slurp($err);
	subtest $name => sub {
		is($st, 1, 'exit 1');
		ok(time - $t0 < 5, 'at once');
		is(scalar @lines, 1, 'one line') or diag(explain(\@lines));
		like($lines[0] // '', qr/\b$var\b/, "it names $var");
		unlike(join("\n", @lines), qr/sekrit/, 'the key not in it');
		ok(!-e "$dir/node/nginx.conf" && !-e "$dir/node/state/node.key", 'nothing rendered');
	};
}
my %m = (MASTER_SERVER => 'http://master:8000', NODE_ID => 'edge-1', NODE_ROLE => 'relay');
entry_fails({ NODE_ROLE => 'edge' }, 'NODE_ROLE', 'an unknown role');
entry_fails({ %m, NODE_KEY => '' }, 'NODE_KEY', 'a master URL without NODE_KEY');
entry_fails({ %m, NODE_KEY_FILE => '/nonexistent/key' }, 'NODE_KEY_FILE', 'a NODE_KEY_FILE that is not there');
entry_fails({ %m, MASTER_KEY => 'sekrit' }, 'MASTER_KEY', "the master secret given to a node (it takes its own key)");
entry_fails({ %m, NODE_KEY => 'sekrit', MASTER_KEY_FILE => '/etc/hostname' }, 'MASTER_KEY', 'the master secret file given to a node');
entry_fails({ %m, NODE_ID => '', NODE_KEY => 'sekrit' }, 'NODE_ID', 'a master URL without NODE_ID');
entry_fails({ %m, MASTER_SERVER => 'master:8000', NODE_KEY => 'sekrit' }, 'MASTER_SERVER', 'a master URL without a scheme');
entry_fails({ NGINX_PORT => 'rtmp' }, 'NGINX_PORT', 'a port that is not a number');
entry_fails({ NGINX_PORT => '70000' }, 'NGINX_PORT', 'a port past 65535');
entry_fails({ HTTP_PORT => '0' }, 'HTTP_PORT', 'port 0');
entry_fails({ HTTP_PORT => $rtmp }, 'HTTP_PORT', 'both ports the same');
entry_fails({ %m, NODE_KEY => 'sekrit', HEARTBEAT_INTERVAL => '10s' }, 'HEARTBEAT_INTERVAL', 'a heartbeat with a unit');
entry_fails({ %m, NODE_KEY => 'sekrit', ROUTE_ENDPOINT => 'route' }, 'ROUTE_ENDPOINT', 'an endpoint that is not a path');
entry_fails({ PUBLIC_HOST => 'a b' }, 'PUBLIC_HOST', 'a host with a space');
entry_fails({ %m, NODE_KEY => 'sekrit', MASTER_CA_FILE => '/etc/hostname' }, 'MASTER_CA_FILE', 'a CA for an http:// master');
entry_fails({ %m, MASTER_SERVER => 'https://master:8000', NODE_KEY => 'sekrit', MASTER_CA_FILE => '/nonexistent/ca.pem' },
	'MASTER_CA_FILE', 'a MASTER_CA_FILE that is not there');
entry_fails({ %m, MASTER_SERVER => 'https://master:8000', NODE_KEY => 'sekrit', MASTER_CA_FILE => 'ca.pem' },
	'MASTER_CA_FILE', 'a relative MASTER_CA_FILE');

my $pid = entry(NGINX_PORT => $rtmp, HTTP_PORT => $http);
ok(wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http") }, 10), 'nginx up in the foreground');
like(slurp("$state/nginx.conf"), qr/mesh_role standalone;.*listen $rtmp;.*listen $http;/s, 'rendered from the environment');
my $pub = publish("rtmp://127.0.0.1:$rtmp/live/cam1?key=k1", secs => 60);
my $tok = viewer_token('s', 'cam1', int(time) + 600);
# (a stream not yet published on a standalone node is a 404 at once: ask until it is)
my $r;
wait_until(sub { $r = HTTP::Tiny->new(timeout => 30)->get("http://127.0.0.1:$http/hls/cam1/master.m3u8?token=$tok"); $r->{status} != 404 }, 15);
is($r->{status}, 200, 'HLS from the standalone node');
ok(probe("rtmp://127.0.0.1:$rtmp/live/cam1?token=$tok", secs => 1)->{video} > 0, 'RTMP play');
is(HTTP::Tiny->new->get("http://127.0.0.1:$http/status")->{status}, 200, 'status on loopback');
kill 'TERM', $pub;
reap($pub, 5);
kill 'QUIT', $pid;
ok(defined reap($pid, 15), 'SIGQUIT ends it');
unlike(slurp("$state/error.log"), qr/\[(alert|crit|emerg)\]/, 'no alert in its log');
done_testing();
