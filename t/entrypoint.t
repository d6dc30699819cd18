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

my $bad = entry(NODE_ROLE => 'edge');
is(reap($bad, 10), 1, 'a bad NODE_ROLE: the entrypoint fails');

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
