#!/usr/bin/perl

# One node, one voice (issue 12, items 1 and 4), under the reference master:
# - a node with 2 and with 4 workers announces once and heartbeats once a second (counted at
#   the master), and publish and play work from any worker (the workers that do not speak for
#   the node follow the table file the voice writes);
# - three `nginx -s reload`s of an ingest, 5 s apart, under a live stream pushed to a root
#   relay and on to an edge, each with 2 workers (one push per target, counted at the
#   receiver): the node announces once per reload (the new generation's voice),
#   the master's table versions stay, the root relay and the edge never drop nor re-admit the
#   stream, the broadcaster stays, a viewer at the edge reads on without a stall;
# - the same for a binary upgrade (USR2, WINCH, QUIT of the old master process).

use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap);
use Mesh::Hostile qw(node_status);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();
plan(skip_all => 'no ss') unless -x '/usr/bin/ss' || -x '/bin/ss';

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 5 --max-poll-wait 3)]);

sub node {
	my ($id, $role, $workers) = @_;
	my $probe = Mesh::Test->new(name => "$id-sock");
	my $sock = "$probe->{dir}/sock";
	mkdir $sock;
	chmod 0777, $sock;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		main => "worker_processes $workers;\nrtmp_auto_push on;\nrtmp_socket_dir $sock;",
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application live { mesh on; live on; } application relay { mesh on; live on; }',
		http => q{http { access_log off; server { listen 127.0.0.1:%%PORT_2%%; location = /status { mesh_status; } } }});
	return $t->run;
}

sub metric {
	my ($name, $node) = @_;
	my $m = HTTP::Tiny->new(timeout => 10)->get($master->url . '/admin/metrics',
		{ headers => { Authorization => 'Bearer ' . $master->{admin} } });
	return ($m->{content} =~ /^\Q$name\E\{node="\Q$node\E"\} (\d+)$/m)[0] // 0;
}

sub announces { my ($id) = @_; scalar(() = $master->log =~ /node announced node=\Q$id\E /g) }
sub tables_sent { my ($id) = @_; scalar(() = $master->log =~ /table sent node=\Q$id\E /g) }

# The pids holding established server-side connections on `port` now.
sub conn_pids {
	my ($port) = @_;
	my %pids = map { /pid=(\d+)/ ? ($1 => 1) : () } qx{ss -tnpH state established '( sport = :$port )' 2>/dev/null};
	return keys %pids;
}

# Heartbeats the master takes from `id` in `secs` seconds.
sub beats_in {
	my ($id, $secs) = @_;
	my $b0 = metric('mesh_master_heartbeats_total', $id);
	sleep $secs;
	return metric('mesh_master_heartbeats_total', $id) - $b0;
}

# --- 2 and 4 workers: one announce, one heartbeat a second; publish and play on any worker.
my $key = $master->stream_key('cam1');
my $token = $master->viewer_token('cam1');
for my $workers (2, 4) {
	my $id = "solo-$workers";
	my $t = node($id, 'standalone', $workers);
	ok(wait_until(sub { my $n = $master->nodes->{$id}; $n && $n->{alive} }, 10), "$workers workers: the node is alive at the master");
	ok(wait_until(sub { log_lines($t, qr/table version \d+ from master in force/) }, 10), "$workers workers: the voice took its table");
	my $beats = beats_in($id, 10);
	ok($beats >= 7 && $beats <= 13, "$workers workers: one heartbeat a second ($beats in 10 s)");
	is(announces($id), 1, "$workers workers: one announce");
	# mesh_status shows the voice's links to the master, whichever worker answers.
	my @links = map {
		my $st = node_status($t);
		join ',', map { "$_->{link}=" . ($_->{up} ? 'up' : 'down') } @{($st // {})->{master} // []};
	} 1 .. 8;
	is(scalar(grep { /heartbeat=up/ && /streams=up/ } @links), 8, "$workers workers: every mesh_status shows the links up")
		or diag(join ' | ', @links);
	my %talkers = map { /\] (\d+)#/ ? ($1 => 1) : () } log_lines($t, qr/mesh: table version \d+ from master in force/);
	is(scalar(keys %talkers), 1, "$workers workers: one worker takes tables from the master");
	my $port = $t->port(1);
	my $pub = publish("rtmp://127.0.0.1:$port/live/cam1?key=$key", secs => 60);
	ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1" from broadcaster/) }, 10), "$workers workers: published");
	ok(wait_until(sub { $master->live->{cam1} }, 10), "$workers workers: live at the master");
	my (%served, $viewers, $played);
	for my $wave (1 .. 4) {
		my @kids;
		for (1 .. $workers * 2) {
			my $pid = fork // die "fork: $!";
			if ($pid == 0) {
				my $r = probe("rtmp://127.0.0.1:$port/live/cam1?token=$token", secs => 3, timeout => 12);
				POSIX::_exit($r->{video} > 0 ? 0 : 1);
			}
			push @kids, $pid;
		}
		sleep 2;
		$served{$_} = 1 for conn_pids($port);
		for my $k (@kids) { waitpid($k, 0); $viewers++; $played++ if $? == 0; }
		last if keys %served >= 2;
	}
	is($played // 0, $viewers, "$workers workers: every viewer played (" . ($played // 0) . " of $viewers)");
	cmp_ok(scalar(keys %served), '>=', 2, "$workers workers: the viewers were served by several workers");
	is(announces($id), 1, "$workers workers: still one announce");
	kill 'TERM', $pub;
	reap($pub, 5);
	$t->stop;
}

# --- Reloads and a binary upgrade under a live stream: ingest → root relay → edge, 2 workers each.
my $ingest = node('ingest-1', 'ingest', 2);
my $root = node('root-1', 'root_relay', 2);
my $edge = node('edge-1', 'relay', 2);
my $rport = $root->port(1);
ok(wait_until(sub { my $n = $master->nodes; 3 == grep { $n->{$_} && $n->{$_}{alive} } qw(ingest-1 root-1 edge-1) }, 10), 'ingest, root relay and edge alive');
my $pub = publish('rtmp://127.0.0.1:' . $ingest->port(1) . "/live/cam1?key=$key", secs => 300);
ok(wait_until(sub { log_lines($root, qr/publish accepted: stream "cam1" from ingest-1/) }, 15), 'the root relay takes the push');
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) }, 15), 'the edge takes the push');

# A viewer at the edge reading `secs` seconds of the stream all the while: returns a check that
# it read them (video all along) in about that time (a stall would make it late).
sub viewer {
	my ($secs) = @_;
	my $t0 = time;
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		my $r = probe('rtmp://127.0.0.1:' . $edge->port(1) . "/relay/cam1?token=$token", secs => $secs, timeout => $secs + 30);
		POSIX::_exit($r->{ok} && $r->{video} >= $secs * 20 ? 0 : 1);
	}
	return sub {
		my ($what) = @_;
		waitpid($pid, 0);
		my ($ok, $took) = ($? == 0, time - $t0);
		ok($ok && $took < $secs + 5, sprintf('%s: the edge viewer read %d s of video in %.1f s', $what, $secs, $took));
	};
}

# The push's connection into the root relay (its ingest-side address), and the table versions.
sub push_conn { my @c = map { (split ' ')[3] } qx{ss -tnH state established '( dport = :$rport )' 2>/dev/null}; join ' ', sort @c }
sub versions { my $n = $master->nodes; join ' ', map { "$_=" . ($n->{$_}{table_version_sent} // '?') } qw(ingest-1 root-1 edge-1) }
sleep 3;
my ($conn, $v) = (push_conn(), versions());
like($conn, qr/^\S+$/, "one push connection ($conn)");
note("table versions: $v");

sub unchanged {
	my ($what, $announced) = @_;
	# Longer than the master's node timeout: a node the master lost would be dead by now.
	sleep 6;
	is(versions(), $v, "$what: the master's table versions do not move");
	is(push_conn(), $conn, "$what: the same push connection into the root relay");
	is(scalar(() = log_lines($root, qr/publish accepted: stream "cam1"/)), 1, "$what: the root relay admitted the stream once");
	is(scalar(() = log_lines($edge, qr/publish accepted: stream "cam1" from/)), 1, "$what: the edge admitted the stream once");
	is(scalar(() = log_lines($edge, qr/publish accepted: stream "cam1" from root-1/)), 1, "$what: one push from the 2-worker root relay");
	is(scalar(() = log_lines($root, qr/stream "cam1" copied from the worker it is published on/)), 1, "$what: the root relay's other worker has its copy");
	is(announces('root-1'), 1, "$what: the root relay announced once");
	my $bad = qr/mesh: (publish|play) (refused|dropped)|disconnect/;
	is(scalar(() = log_lines($root, $bad)), 0, "$what: nothing dropped nor refused at the root relay")
		or diag(join "\n", log_lines($root, $bad));
	ok(kill(0, $pub) && !defined reap($pub, 0), "$what: the broadcaster stays");
	is(announces('ingest-1'), $announced, "$what: one announce per voice ($announced)");
	ok($master->nodes->{'ingest-1'}{alive}, "$what: the ingest is alive at the master");
	my $beats = beats_in('ingest-1', 5);
	ok($beats >= 3 && $beats <= 7, "$what: one heartbeat a second ($beats in 5 s)");
	is(scalar(() = $master->live->{cam1} ? 1 : ()), 1, "$what: the stream is live at the master");
}

is(sprintf('%o', (stat($ingest->testdir . '/table.json.voice'))[2] & 07777), '600', 'the voice lock is 0600');
my $tables = tables_sent('ingest-1');
my $watching = viewer(18);
for my $i (1 .. 3) {
	$ingest->reload;
	sleep 5;
}
$watching->('three reloads');
ok(wait_until(sub { 3 == log_lines($ingest, qr/mesh: this worker speaks for the node now/) }, 5), 'reloads: each new generation took the voice');
unchanged('three reloads', 4);
is(tables_sent('ingest-1'), $tables, 'reloads: no table sent to the ingest');

# A binary upgrade: a new master process with its workers, then the old workers leave.
my $old = $ingest->pid;
$watching = viewer(14);
kill 'USR2', $old;
ok(wait_until(sub { my $p = $ingest->pid; $p && $p != $old }, 10), 'upgrade: a new master process');
sleep 3;
kill 'WINCH', $old;
sleep 4;
kill 'QUIT', $old;
ok(wait_until(sub { 4 == log_lines($ingest, qr/mesh: this worker speaks for the node now/) }, 5), 'upgrade: the new generation took the voice');
$watching->('binary upgrade');
unchanged('binary upgrade', 5);
is(tables_sent('ingest-1'), $tables, 'upgrade: no table sent to the ingest');
ok(kill(0, $old), 'upgrade: the old master stays while its worker holds the broadcaster');

kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { !kill(0, $old) }, 10), 'upgrade: the old master leaves with its last worker');
$ingest->stop;
$root->stop;
$edge->stop;
$master->stop;
unlike($master->log, qr/panic/, 'master: no panic');
done_testing();
