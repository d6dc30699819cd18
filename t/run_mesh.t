#!/usr/bin/perl

# `make mesh` (scripts/run-mesh.sh): the master and four nodes rendered from environment
# variables as the Docker image renders them; the printed broadcaster URL publishes, the printed
# viewer URLs play (edge-2 by a route request), no secret is on any command line (the admin
# token, the master secret and the node keys: curl reads a header file, the master and each node
# key files; each node has its own key, derived with mesh-tool node-key), and
# Ctrl-C leaves no process behind. The master serves HTTPS with a private CA's certificate
# (scripts/mesh-tls.sh), which every node verifies (mesh_master_ca).

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

# Nine free ports in a row: four RTMP, four HTTP, the master; outside the ephemeral range (where
# an outgoing connection may take one before nginx binds it: "Address already in use"), and
# free on INADDR_ANY, where the nodes listen.
my $rbase = free_port(9);
my ($hbase, $mport) = ($rbase + 4, $rbase + 8);
ok($rbase >= 20000 && $mport < 32768, "ports $rbase-$mport: below the ephemeral range");
{
	my $held = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => free_port(), Listen => 1) or die;
	ok(!Mesh::Test::port_is_free($held->sockport), 'a port bound on INADDR_ANY is not free');
}
my $run = tempdir('mesh-run-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
chmod 0755, $run;
my $out = "$run/out.txt";

# Every curl the script runs, through a shim that records its command line (the admin token
# must not be on it: ps shows argv to every local user).
my $shims = tempdir('mesh-shim-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $argv_log = "$shims/argv.log";
my ($curl) = grep { -x } map { "$_/curl" } split /:/, $ENV{PATH};
open my $shim, '>', "$shims/curl" or die;
print $shim qq{#!/bin/sh\nprintf '%s\\n' "curl \$*" >>'$argv_log'\nexec '$curl' "\$@"\n};
close $shim;
chmod 0755, "$shims/curl";

my $pid = fork // die;
if ($pid == 0) {
	setsid();
	open STDOUT, '>', $out or die;
	open STDERR, '>&', \*STDOUT or die;
	$ENV{MESH_RUN_DIR} = $run;
	$ENV{MESH_MASTER_PORT} = $mport;
	$ENV{MESH_RTMP_BASE} = $rbase;
	$ENV{MESH_HTTP_BASE} = $hbase;
	$ENV{PATH} = "$shims:$ENV{PATH}";
	# Ctrl-C as at a terminal: a shell cannot trap a signal ignored when it started (as it is
	# under a background job, `nohup make test &`), so the test gives it the default back.
	$SIG{INT} = 'DEFAULT';
	exec 'bash', 'scripts/run-mesh.sh' or die;
}
sub out { open my $fh, '<', $out or return ''; local $/; <$fh> }
ok(wait_until(sub { out() =~ /stop: Ctrl-C/ }, 30), 'the mesh is up and says how to use it') or diag(out());
my ($key) = out() =~ m{'rtmp://127\.0\.0\.1:$rbase/live/demo\?key=([0-9a-f]+)'};
my ($token) = out() =~ m{/hls/demo/master\.m3u8\?token=([A-Za-z0-9._-]+)};
ok($key && $token, 'a real key and token printed');

my $pub = publish("rtmp://127.0.0.1:$rbase/live/demo?key=$key", secs => 120);
my $ua = HTTP::Tiny->new(timeout => 40);
my $edge2 = $hbase + 3;
# (until the stream is live at the master, edge-2's route request is answered "unknown": 404;
# for a moment after the stream is made, before edge-2's table carries it, its fresh token is
# "bad token": 403 — a known race, to fix in the node, waited out here)
my $hls;
wait_until(sub { $hls = $ua->get("http://127.0.0.1:$edge2/hls/demo/master.m3u8?token=$token")->{status}; $hls != 404 && $hls != 403 }, 30);
is($hls, 200, 'HLS at edge-2 (routed on demand)');
like($ua->get('http://127.0.0.1:' . ($hbase + 2) . '/player/')->{headers}{'content-security-policy'} // '',
	qr/^default-src 'none';/, 'the player page at edge-1, with its CSP');
is($ua->get('http://127.0.0.1:' . ($hbase + 2) . '/status')->{status}, 200, 'status at edge-1, from loopback');
ok(wait_until(sub { probe('rtmp://127.0.0.1:' . ($rbase + 2) . "/relay/demo?token=$token", secs => 1, timeout => 10)->{video} > 0 }, 20),
	'RTMP at edge-1');

# No secret on any command line while the mesh runs (master, nodes, transcodes, the script's curl).
sub slurp { open my $fh, '<', $_[0] or return ''; local $/; <$fh> }
my %secret = (admin_token => slurp("$run/admin.token"), master_key => slurp("$run/master.key"),
	node_key => slurp("$run/keys/edge-1.key") =~ s/\s+$//r);
ok(length($secret{admin_token}) >= 32 && length($secret{master_key}) >= 32, 'the mesh made its secrets');
is((stat "$run/$_")[2] & 0777, 0600, "$_: 0600") for qw(admin.token master.key admin.header keys/edge-1.key);
is($secret{node_key}, Mesh::Master::node_key({ key => $secret{master_key} =~ s/\s+$//r }, 'edge-1'), "edge-1 has its own key");
is(slurp("$run/edge-1/state/node.key") =~ s/\s+$//r, $secret{node_key}, 'in its state, the master secret nowhere');
is((stat "$run/tls/$_")[2] & 0777, 0600, "tls/$_: 0600") for qw(master.key ca.key);
like(out(), qr{admin:\s+curl --cacert \Q$run\E/tls/ca.pem -H \S+ https://127\.0\.0\.1:$mport/}, 'the master is HTTPS, the CA printed for curl');
like(slurp("$run/edge-1/nginx.conf"), qr{mesh_master https://127\.0\.0\.1:$mport;\s+mesh_master_ca \Q$run\E/tls/ca.pem;}, 'the nodes verify it with the CA');
like(slurp("$run/master.log"), qr/mesh-master ready.*scheme="?https/, 'the master says it serves HTTPS');
my @cmdlines = map { my $c = slurp($_); $c =~ tr/\0/ /; $c } glob('/proc/[0-9]*/cmdline');
ok(@cmdlines > 5 && (grep { /mesh-master/ } @cmdlines), scalar(@cmdlines) . ' command lines read, the master\'s among them');
ok((grep { /curl/ } split /\n/, slurp($argv_log)) >= 3, 'the script\'s curl calls recorded');
for my $name (sort keys %secret) {
	my @seen = grep { index($_, $secret{$name}) >= 0 } @cmdlines, split /\n/, slurp($argv_log);
	is(scalar @seen, 0, "$name on no command line") or diag(join "\n", @seen);
}
unlike(out(), qr/\Q$secret{admin_token}\E/, 'the admin token is not printed (its header file is)');

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
