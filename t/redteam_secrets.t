#!/usr/bin/perl

# Red team of issue 10's secrets (item 5 and 6), as an outsider on the same machine would try
# them: what the node's scripts leave in processes' environments and on disk.
#
# - The node key given to the image's entrypoint (NODE_KEY; MASTER_KEY before issue 13) is written to a 0600 file for
#   nginx, but was left in the environment nginx was started with: /proc/<pid>/environ of the
#   nginx master and of every worker (which fork with the master's memory) showed it, readable
#   by every process of the worker's user — ffmpeg among them, which parses broadcasters'
#   media.
# - render-node-conf.sh under umask 0 (what a daemon may run with) made the state directory
#   world-writable and its table file world-readable and writable; a master key file that was
#   already there kept its old mode.
# - An HTTP error log at `debug` (or `info`) set in `http {}` writes every media request's
#   line with its `token=`; `nginx -t` warned only for the main error log.
# - A token re-spelt (its signature in uppercase, a leading zero on its expiry) verified all the
#   same: one token was any number of distinct credentials.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use lib 't/lib';
use HTTP::Tiny;
use Mesh::Test qw(free_port wait_until reap spawn viewer_token publish sha256_hex log_lines);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

use Cwd qw(abs_path);
sub slurp { open my $f, '<', $_[0] or return ''; local $/; <$f> }
sub mode { (stat $_[0])[2] & 07777 }

my $prefix = abs_path('dist');
my $key = 'redteam-master-key-' . join('', map { int rand 10 } 1 .. 12);

# --- the entrypoint: no secret left in any environment -----------------------------------------
{
	my $state = tempdir('mesh-rts-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
	chmod 0755, $state;
	my ($rtmp, $http, $mport) = (free_port(), free_port(), free_port());
	my $pid = do {
		local %ENV = (%ENV, MESH_PREFIX => $prefix, MESH_STATE_DIR => $state, ERROR_LOG => "$state/error.log",
			NODE_ID => 'edge-rt', NODE_ROLE => 'relay', NGINX_PORT => $rtmp, HTTP_PORT => $http,
			MASTER_SERVER => "http://127.0.0.1:$mport", NODE_KEY => $key);
		spawn('bash', 'scripts/node-entrypoint.sh');
	};
	ok(wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http") }, 15), 'the node is up');
	my $ppid = sub { (slurp("/proc/$_[0]/stat") =~ /^\d+ \(.*\) \S (\d+)/)[0] // 0 };
	my @workers;
	wait_until(sub { @workers = grep { $ppid->($_) == $pid } map { m{/proc/(\d+)} ? $1 : () } glob('/proc/[0-9]*') }, 10);
	ok(@workers, 'a worker runs (' . scalar(@workers) . ')');
	is(mode("$state/state/node.key"), 0600, 'the key is in a 0600 file');
	for my $p ($pid, @workers) {
		my $env = slurp("/proc/$p/environ");
		ok(length $env, "/proc/$p/environ readable");
		unlike($env, qr/\Q$key\E/, "no node key in the environment of process $p");
	}
	kill 'QUIT', $pid;
	ok(defined reap($pid, 15), 'SIGQUIT ends it');
}

# --- render-node-conf.sh under umask 0 -------------------------------------------------------
{
	my $top = tempdir('mesh-rts-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
	my $dir = "$top/node";
	my $render = sub {
		local %ENV = (%ENV, MESH_PREFIX => $prefix, NODE_ID => 'edge-rt', NODE_ROLE => 'relay',
			MASTER_SERVER => 'http://127.0.0.1:1', NODE_KEY => $key);
		my $old = umask 0;
		my $out = `bash scripts/render-node-conf.sh $dir 2>&1`;
		umask $old;
		is($?, 0, 'rendered') or diag($out);
	};
	$render->();
	for my $d ("$dir/state", "$dir/media") {
		is(mode($d) & 0007, 0, sprintf('%s: nothing for others (%04o)', $d =~ s{.*/}{}r, mode($d)));
	}
	is(mode("$dir/state/table.json") & 0077, 0, sprintf('table.json: owner only (%04o)', mode("$dir/state/table.json")));
	is(mode("$dir/state/node.key"), 0600, 'node.key 0600');
	# A key file from before, world-readable: made private when written again; the shared key
	# file of an earlier version goes.
	chmod 0644, "$dir/state/node.key";
	open my $old, '>', "$dir/state/master.key" or die;
	close $old;
	$render->();
	is(mode("$dir/state/node.key"), 0600, 'a 0644 node.key from before is made 0600');
	is(slurp("$dir/state/node.key"), "$key\n", 'and holds the key');
	ok(!-e "$dir/state/master.key", "an earlier version's master.key is gone");
}

# --- an HTTP error log at debug: warned by nginx -t ------------------------------------------
{
	my $t = Mesh::Test->new(name => 'rts-httplog');
	my $dir = $t->testdir;
	$t->write_file('table.json', '{"version": 1, "role": "standalone", "viewer_secret": "rts-vs"}');
	my $load = join '', map { "load_module $_;\n" } "$Mesh::Test::MODULES/ngx_rtmp_module.so", "$Mesh::Test::MODULES/ngx_rtmp_mesh_module.so";
	my $conf = sub {
		my ($level) = @_;
		$t->write_file_expand('nginx.conf', "${load}pid $dir/nginx.pid;\nerror_log $dir/error.log notice;\nevents {}\n"
			. "rtmp {\n    mesh_table_file table.json;\n    server {\n        listen 127.0.0.1:%%PORT_1%%;\n"
			. "        application live { mesh on; live on; }\n    }\n}\n"
			. "http {\n    access_log off;\n    error_log $dir/http.log $level;\n    mesh_media_root $dir/media;\n"
			. "    server {\n        listen 127.0.0.1:%%PORT_2%%;\n        location /hls/ { mesh_media hls; }\n    }\n}\n");
	};
	my $warn = qr/\[warn\] "mesh_media" with error log level "(\w+)": request lines \(viewer tokens\) are logged at this level, use "notice" or above/;
	$conf->('debug');
	my ($ok, $out) = $t->test_config;
	ok($ok, 'http error log at debug: the configuration is good') or diag($out);
	like($out, $warn, 'warned') or diag($out);
	is(($out =~ $warn)[0], 'debug', 'names the level');
	# What it warns of: the token is in that log.
	$t->run;
	my $tok = viewer_token('rts-vs', 'cam1', int(time) + 600);
	HTTP::Tiny->new(timeout => 5)->get('http://127.0.0.1:' . $t->port(2) . "/hls/cam1/index.m3u8?token=$tok");
	ok(wait_until(sub { index($t->read_file('http.log'), $tok) >= 0 }, 5), 'at debug, nginx logs the token');
	# One spelling per token: the good one passes the token check (404: not live), re-spelt
	# ones are refused (403).
	my $get = sub { HTTP::Tiny->new(timeout => 5)->get('http://127.0.0.1:' . $t->port(2) . "/hls/cam1/master.m3u8?token=$_[0]")->{status} };
	is($get->($tok), 404, 'the token as made: past the check');
	my ($exp, $sig) = split /\./, $tok;
	is($get->("$exp." . uc $sig), 403, 'its signature in uppercase: refused');
	is($get->("0$exp.$sig"), 403, 'a leading zero on its expiry: refused');
	$t->stop;
	$conf->('notice');
	($ok, $out) = $t->test_config;
	unlike($out, qr/"mesh_media" with error log level/, 'notice: no warning') or diag($out);
}

# --- the transcoder inherits no secret from nginx's environment -------------------------------
{
	my $t = Mesh::Test->new(name => 'rts-env');
	my $media = $t->media_dir;
	$t->write_file('table.json', qq({"role": "standalone", "viewer_secret": "rts-vs",
  "publish": {"cam1": {"key_sha256": "@{[sha256_hex('k1')]}"}}}));
	# A stand-in for ffmpeg that writes down its environment and waits.
	my $fake = $t->write_file('fake-ffmpeg', "#!/bin/sh\ntrap 'exit 0' TERM\n"
		. "env > $media/env.\$\$\nwhile :; do sleep 0.1; done\n");
	chmod 0755, $fake;
	$t->write_node_conf(http => <<CONF);
http {
    access_log off;
    mesh_media_root $media;
    mesh_ffmpeg $fake;
    mesh_rtmp_source rtmp://127.0.0.1:%%PORT_1%%/live;
    mesh_manifest_wait 5s;
    server {
        listen 127.0.0.1:%%PORT_2%%;
        location /hls/ { mesh_media hls; }
    }
}
CONF
	{
		local $ENV{MASTER_KEY} = $key;
		local $ENV{NODE_KEY} = $key;
		local $ENV{ADMIN_TOKEN} = $key;
		$t->run;
	}
	my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . '/live/cam1?key=k1', secs => 60);
	ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 10), 'published');
	my $tok = viewer_token('rts-vs', 'cam1', int(time) + 600);
	HTTP::Tiny->new(timeout => 2)->get('http://127.0.0.1:' . $t->port(2) . "/hls/cam1/master.m3u8?token=$tok");
	my ($envf) = wait_until(sub { (glob("$media/env.*"))[0] }, 10);
	ok($envf, 'the transcoder started');
	my $env = slurp($envf // '');
	unlike($env, qr/\Q$key\E/, "no secret of nginx's environment in the transcoder's");
	unlike($env, qr/^(MASTER_KEY|NODE_KEY|ADMIN_TOKEN)=/m, 'nor their names');
	kill 'TERM', $pub;
	reap($pub, 5);
	$t->stop;
}

done_testing();
