#!/usr/bin/perl

# `make mesh` (scripts/run-mesh.sh): the master and four nodes rendered from environment
# variables as the Docker image renders them; the printed broadcaster URL publishes, the printed
# viewer URLs play (edge-2 by a route request), and Ctrl-C leaves no process behind.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use POSIX qw(setsid);
use lib 't/lib';
use Mesh::Test qw(free_port publish probe wait_until reap);
use Mesh::Master;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

# Ten free ports in a row: master, four RTMP, four HTTP.
my ($rbase, $hbase);
for (1 .. 50) {
	my $p = free_port();
	my @socks = map { IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p + $_, Listen => 1, ReuseAddr => 1) } 0 .. 8;
	next if grep { !$_ } @socks;
	$_->close for @socks;
	($rbase, $hbase) = ($p, $p + 4);
	last;
}
my $mport = $rbase + 8;
my $run = tempdir('mesh-run-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
chmod 0755, $run;
my $out = "$run/out.txt";

my $pid = fork // die;
if ($pid == 0) {
	setsid();
	open STDOUT, '>', $out or die;
	open STDERR, '>&', \*STDOUT or die;
	$ENV{MESH_RUN_DIR} = $run;
	$ENV{MESH_MASTER_PORT} = $mport;
	$ENV{MESH_RTMP_BASE} = $rbase;
	$ENV{MESH_HTTP_BASE} = $hbase;
	exec 'bash', 'scripts/run-mesh.sh' or die;
}
sub out { open my $fh, '<', $out or return ''; local $/; <$fh> }
ok(wait_until(sub { out() =~ /stop: Ctrl-C/ }, 30), 'the mesh is up and says how to use it') or diag(out());
my ($key) = out() =~ m{'rtmp://127\.0\.0\.1:$rbase/live/demo\?key=([0-9a-f]+)'};
my ($token) = out() =~ m{/hls/demo/master\.m3u8\?token=([0-9a-f.]+)};
ok($key && $token, 'a real key and token printed');

my $pub = publish("rtmp://127.0.0.1:$rbase/live/demo?key=$key", secs => 120);
my $ua = HTTP::Tiny->new(timeout => 40);
my $edge2 = $hbase + 3;
# (until the stream is live at the master, edge-2's route request is answered "unknown": 404)
my $hls;
wait_until(sub { $hls = $ua->get("http://127.0.0.1:$edge2/hls/demo/master.m3u8?token=$token")->{status}; $hls != 404 }, 30);
is($hls, 200, 'HLS at edge-2 (routed on demand)');
ok(wait_until(sub { probe('rtmp://127.0.0.1:' . ($rbase + 2) . "/relay/demo?token=$token", secs => 1, timeout => 10)->{video} > 0 }, 20),
	'RTMP at edge-1');

my @nginx = map { my $p = `cat $run/$_/logs/nginx.pid 2>/dev/null`; chomp $p; $p || () } qw(ingest-1 root-1 edge-1 edge-2);
is(scalar @nginx, 4, 'four nginx masters');
kill 'TERM', $pub;
reap($pub, 5);
kill 'INT', $pid;
ok(defined reap($pid, 30), 'Ctrl-C: the script ends');
ok(wait_until(sub { !grep { kill 0, $_ } @nginx }, 5), 'no nginx left');
my @left = grep { (`cat /proc/$_/cmdline 2>/dev/null` // '') =~ /\Q$run\E/ } map { /^(\d+)$/ ? $1 : () } `pgrep -f '$run'`;
is(scalar @left, 0, 'no process of the mesh left (master, ffmpeg)') or diag(`ps -o pid,cmd -p @left`);
like(out(), qr/stopped\./, 'says it stopped');
done_testing();
