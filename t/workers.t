#!/usr/bin/perl

# A node with more than one worker, from a table file, with nginx-rtmp's `rtmp_auto_push`: a
# stream published into one worker is copied into the others (over their unix sockets); each
# copy is admitted without a key as the same stream, is never counted, and never pushes to the
# table's targets. So viewers on any worker play it, and a push leaves the node once.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap);
use Mesh::Hostile qw(node_status client);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
# ss (iproute2: scripts/deps.sh installs it) tells which worker holds a connection.
plan(skip_all => 'no ss') unless -x '/usr/bin/ss' || -x '/bin/ss';

sub node {
	my (%o) = @_;
	my $t = Mesh::Test->new(name => $o{name});
	$t->write_file('table.json', $o{table});
	# The workers' unix sockets: a directory they (the worker user) can write to.
	my $sock = "$t->{dir}/sock";
	mkdir $sock;
	chmod 0777, $sock;
	$t->write_node_conf(main => qq{
	    worker_processes $o{workers};
	    rtmp_auto_push on;
	    rtmp_socket_dir $sock;
	}, rtmp => qq{
	    mesh_node_id $o{name};
	    mesh_role $o{role};
	    mesh_table_file table.json;
	}, apps => ($o{unix} ? "listen unix:$sock/clients.sock;\n" : '') . qq{
	    application live { mesh on; live on; }
	    application relay { mesh on; live on; }
	}, http => $o{status} ? q{
	http {
	    access_log off;
	    server {
	        listen 127.0.0.1:%%PORT_2%%;
	        location = /status { mesh_status; }
	    }
	}} : '');
	return $t->run;
}

# The pids holding established server-side connections on `port` now.
sub conn_pids {
	my ($port) = @_;
	my %pids = map { /pid=(\d+)/ ? ($1 => 1) : () } qx{ss -tnpH state established '( sport = :$port )' 2>/dev/null};
	return keys %pids;
}

my $key = 'stream-key-7';
my $sha = Mesh::Test::sha256_hex($key);

# A standalone node with two workers: viewers on either worker play the stream.
my $t = node(name => 'solo', role => 'standalone', workers => 2, status => 1, unix => 1,
	table => qq({"version": 3, "publish": {"cam1": {"key_sha256": "$sha"}}}));
my $port = $t->port(1);
my $base = "rtmp://127.0.0.1:$port";
my $pub = publish("$base/live/cam1?key=$key", secs => 60);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1" from broadcaster/) }, 8), 'published into one worker');
ok(wait_until(sub { log_lines($t, qr/stream "cam1" copied from the worker it is published on/) }, 8),
	'copied into the other worker, admitted without a key');

# nginx-rtmp flags every unix-socket session as auto-pushed: a client on the operator's own
# `listen unix:` is no copy, and publishes with a key like anyone.
my $csock = "$t->{dir}/sock/clients.sock";
ok(-S $csock, 'a unix listener for clients');
my ($nokey) = client('check', '--url', "rtmp://127.0.0.1:$port/live", '--name', 'cam9', '--unix', $csock, '--timeout', 5);
ok($nokey && !$nokey->{accepted}, 'over the unix listener without a key: refused (' . ($nokey->{code} // '') . ')');
ok(wait_until(sub { log_lines($t, qr/publish refused: app "live", stream "cam9", from .*: no key/) }, 3), '... no key, as over TCP');
my ($keyed) = client('check', '--url', "rtmp://127.0.0.1:$port/live", '--name', 'cam1', '--args', "key=$key", '--unix', $csock, '--timeout', 5);
ok($keyed && !$keyed->{accepted}, 'with the key of a stream already published: not taken as a copy either (' . ($keyed->{code} // '') . ')');

# Viewers in waves until both workers serve some (the kernel spreads connections).
my (%served, $viewers, $played);
for my $wave (1 .. 5) {
	my @kids;
	for (1 .. 6) {
		my $pid = fork // die "fork: $!";
		if ($pid == 0) {
			my $r = probe("$base/live/cam1", secs => 4, timeout => 12);
			POSIX::_exit($r->{video} > 0 && $r->{audio} > 0 ? 0 : 1);
		}
		push @kids, $pid;
	}
	sleep 2;
	$served{$_} = 1 for conn_pids($port);
	for my $k (@kids) {
		waitpid($k, 0);
		$viewers++;
		$played++ if $? == 0;
	}
	last if keys %served >= 2;
}
is($played // 0, $viewers, 'every viewer played (' . ($played // 0) . " of $viewers)");
cmp_ok(scalar(keys %served), '>=', 2, 'viewers were served by both workers (' . join(' ', sort keys %served) . ')');
is(scalar(() = grep { !/cam9/ } log_lines($t, qr/refused/)), 0, 'nothing else refused') or diag(join "\n", log_lines($t, qr/refused/));

# mesh_status speaks for the node, from whichever worker answers: viewers of both workers,
# one stream (the copy is not a stream of its own), refusals of both workers.
my @kids;
for (1 .. 8) {
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		probe("$base/live/cam1", secs => 9, timeout => 15);
		POSIX::_exit(0);
	}
	push @kids, $pid;
}
my $split;
ok(wait_until(sub {
	my %by = map { $_ => 0 } conn_pids($port);
	$split = keys %by >= 2;
	my @seen;
	for (1 .. 6) {
		my $st = node_status($t) or return 0;
		my @s = @{$st->{streams} // []};
		return 0 unless @s == 1 && $s[0]{stream} eq 'cam1' && $s[0]{viewers} == 8;
	}
	return 1;
}, 8), 'mesh_status: one stream with the viewers of both workers, whichever worker answers');
for my $k (@kids) { waitpid($k, 0) }
probe("rtmp://127.0.0.1:$port/live/..bad", timeout => 5) for 1 .. 6;
ok(wait_until(sub {
	my $st = node_status($t) or return 0;
	my ($bad) = map { $_->{count} } grep { $_->{action} eq 'play' && $_->{reason} eq 'bad name' } @{$st->{refusals} // []};
	($bad // 0) == 6;
}, 5), 'mesh_status: the refusals of both workers, counted once');
is(scalar(() = log_lines($t, qr/copied from the worker/)), 1, 'one copy (one other worker)');
like($t->error_log, qr/play refused: app "live", stream "\.\.bad"/, 'the bad names were refused');
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;

# An ingest with two workers pushes each stream once: its copies push nothing.
my $root = node(name => 'root-1', role => 'root_relay', workers => 1,
	table => q({"version": 3, "ingest": {"cam1": [{"node_id": "root-1", "node_url": "rtmp://127.0.0.1:1/relay", "node_key": "k-i-r"}]}}));
my $rport = $root->port(1);
my $ingest = node(name => 'ingest-1', role => 'ingest', workers => 2,
	table => qq({"version": 3, "publish": {"cam1": {"key_sha256": "$sha"}},
	  "ingest": {"cam1": [{"node_id": "root-1", "node_url": "rtmp://127.0.0.1:$rport/relay", "node_key": "k-i-r"}]}}));
$pub = publish('rtmp://127.0.0.1:' . $ingest->port(1) . "/live/cam1?key=$key", secs => 60);
ok(wait_until(sub { log_lines($root, qr/publish accepted: stream "cam1" from ingest-1/) }, 10), 'the root relay gets the push');
ok(wait_until(sub { log_lines($ingest, qr/copied from the worker/) }, 8), 'the ingest copied the stream into its other worker');
# Three push retry periods: a copy that pushed would have connected by now.
sleep 10;
is(scalar(() = log_lines($root, qr/publish accepted: stream "cam1"/)), 1, 'one push reached the root relay');
my @conns = qx{ss -tnH state established '( sport = :$rport )' 2>/dev/null};
is(scalar(@conns), 1, 'one connection into the root relay');
is(scalar(() = log_lines($ingest, qr/refused/)), 0, 'nothing refused at the ingest');
kill 'TERM', $pub;
reap($pub, 5);
$ingest->stop;
$root->stop;

# The shared zone: a large one starts (the slab's page bookkeeping grows with it), a small one
# is refused at its directive.
for my $size ('4m', '16m', '64m') {
	my $z = Mesh::Test->new(name => "zone-$size");
	$z->write_file('table.json', '{"version": 1}');
	$z->write_node_conf(rtmp => "mesh_table_file table.json;\n    mesh_shared_zone $size;");
	my ($ok, $out) = $z->test_config;
	ok($ok, "mesh_shared_zone $size: nginx -t passes") or diag($out);
}
{
	my $z = Mesh::Test->new(name => 'zone-small');
	$z->write_file('table.json', '{"version": 1}');
	$z->write_node_conf(rtmp => "mesh_table_file table.json;\n    mesh_shared_zone 100k;");
	my ($ok, $out) = $z->test_config;
	ok(!$ok && $out =~ /"mesh_shared_zone" of 102400 bytes is too small, it must be at least 640k in .*nginx\.conf:\d+/,
		'mesh_shared_zone 100k: refused, saying why') or diag($out);
}

# nginx's cache manager and loader run every module's init_process: they are no node (they
# would announce and heartbeat as it). Only the worker talks to the (here unreachable) master.
my $h = Mesh::Test->new(name => 'helpers');
$h->write_file('master.key', "k\n");
chmod 0600, "$h->{dir}/master.key";
mkdir "$h->{dir}/cache";
my $dead = Mesh::Test::free_port();
$h->write_node_conf(rtmp => qq{
    mesh_node_id edge-1;
    mesh_master http://127.0.0.1:$dead;
    mesh_master_key_file master.key;
    mesh_heartbeat_interval 1s;
}, http => q{
http {
    access_log off;
    proxy_cache_path %%TESTDIR%%/cache keys_zone=c:1m;
    server { listen 127.0.0.1:%%PORT_2%%; location / { return 204; } }
}});
$h->run;
ok(wait_until(sub { log_lines($h, qr/mesh: master \w+ failed/) }, 5), 'the master is unreachable');
sleep 2;
my %pids = map { /\] (\d+)#/ ? ($1 => 1) : () } log_lines($h, qr/mesh: master \w+ failed/);
is(scalar(keys %pids), 1, 'one process talks to the master, not the cache manager nor the loader ('
	. join(' ', sort keys %pids) . ')');
$h->stop;

done_testing();
