#!/usr/bin/perl

# Faults of the master, each leaving the node on its last good table, logged once per change
# of state, retried with backoff, and recovered from: master down at start, gone mid-run,
# stalls (the event loop never waits), 500s, garbage, truncated and oversized bodies, bad or
# missing signatures, timestamps off by more than 300 s, a table that fails validation; a
# restart on the saved table with the master down; reload and quit while the master hangs.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status wait_until log_lines reap);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $master = Mesh::FakeMaster->new;
$master->stop;    # down at start

my $good = { version => 5, role => 'ingest', publish => { cam1 => { key_sha256 => sha256_hex('k1') } } };
my $t = Mesh::Node->under_master(id => 'ingest-1', master => $master, role => 'ingest',
	table => '{"version": 4, "role": "ingest", "publish": {"cam1": {"key_sha256": "' . sha256_hex('k1') . '"}}}');
$t->run;
my $base = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';

sub count { scalar(() = log_lines($t, $_[0])) }

# sends one publish with a key the table knows; true when admitted within a second
sub admitted_at_once {
	my $n = count(qr/publish accepted: stream "cam1"/);
	my $t0 = time;
	my $pub = publish("$base/cam1?key=k1", secs => 1);
	my $ok = wait_until(sub { count(qr/publish accepted: stream "cam1"/) > $n }, 3);
	my $took = time - $t0;
	reap($pub, 10);
	return $ok && $took < 1.5;
}

# Down at start: the node runs on the table it has.
ok(wait_until(sub { log_lines($t, qr/master announce failed: .*; keeping table version 4, retrying with backoff/) }, 10), 'down at start: logged');
ok(admitted_at_once(), 'down at start: a known key is admitted');
sleep 3;
is(count(qr/master announce failed/), 1, 'down at start: one line, not one per retry');

# The master comes up: announce, then the table.
$master->start;
$master->set_table('ingest-1', $good);
ok(wait_until(sub { log_lines($t, qr/master announce is back/) }, 15), 'master up: announce recovers');
ok(wait_until(sub { log_lines($t, qr/table version 5 from master in force/) }, 10), 'master up: table v5 in force');

# Faults of the streams endpoint: each one logged once, the table stays, the node serves.
my @faults = (
	[ '500', qr/master streams failed: unexpected status 500/ ],
	[ 'badsig', qr/master streams failed: response refused: bad signature/ ],
	[ 'nosig', qr/master streams failed: response refused: missing signature/ ],
	[ 'skew', qr/master streams failed: response refused: timestamp outside 300 s/ ],
	[ 'garbage', qr/table from master refused: line 1, column 1: expected value; keeping table version \d+/ ],
	[ 'truncated', qr/table from master refused: line 1, column \d+: EOF while parsing/ ],
	[ 'badtable', qr/table from master refused: relay."..\/etc": invalid stream id.*; keeping table version \d+/ ],
	[ 'huge', qr/master streams failed: response body larger than 67108864 bytes/ ],
);
my $v = 5;
for my $f (@faults) {
	my ($mode, $re) = @$f;
	$master->clear;
	$master->fault('streams', $mode);
	# a newer table makes the long poll answer at once, with the fault applied
	$master->set_table('ingest-1', { %$good, version => ++$v });
	ok(wait_until(sub { log_lines($t, $re) }, 15), "$mode: logged");
	sleep 3;
	is(count($re), 1, "$mode: logged once");
	my $tries = @{$master->requests('streams')};
	cmp_ok($tries, '>=', 2, "$mode: retried ($tries tries)");
	cmp_ok($tries, '<=', 12, "$mode: with backoff, not a hot loop");
	unlike($t->error_log, qr/table version (999|$v) from master in force/, "$mode: the bad answer never took effect");
	ok(admitted_at_once(), "$mode: the last good table still admits");
	$master->fault('streams', 'ok');
	ok(wait_until(sub { log_lines($t, qr/table version $v from master in force/) }, 20), "$mode: recovered (table v$v)");
}

# Stalls: 10 s on every endpoint; the event loop never waits.
$master->fault('*', 'stall', 10);
$master->set_table('ingest-1', { %$good, version => ++$v });
sleep 1;
ok(admitted_at_once(), 'stall: a known key is admitted at once');
ok(admitted_at_once(), 'stall: and again');
$master->fault('*', 'ok');
ok(wait_until(sub { log_lines($t, qr/table version $v from master in force/) }, 30), 'stall: recovered');

# Gone mid-run: failures logged once each, the node serves on, and recovers.
my $streams_before = count(qr/master streams failed/);
$master->stop;
ok(wait_until(sub { log_lines($t, qr/master heartbeat failed: /) }, 10), 'gone: heartbeat failure logged');
ok(admitted_at_once(), 'gone: a known key is admitted');
sleep 4;
is(count(qr/master heartbeat failed/), 1, 'gone: heartbeat failure logged once');
is(count(qr/master streams failed/) - $streams_before, 1, 'gone: streams failure logged once');
$master->start;
$master->set_table('ingest-1', { %$good, version => ++$v });
ok(wait_until(sub { log_lines($t, qr/table version $v from master in force/) }, 30), 'gone: recovered with the new table');
ok(wait_until(sub { log_lines($t, qr/master heartbeat is back/) }, 10), 'gone: heartbeat back');
ok(wait_until(sub { @{$master->requests('announce')} >= 1 }, 10), 'gone: the node announced itself again');

# Restart on the saved table with the master down.
ok(wait_until(sub { $t->read_file('table.json') =~ /"version":\s*$v/ }, 5), "table v$v saved");
$t->stop;
$master->stop;
$t->run;
ok(admitted_at_once(), 'restart with the master down: runs on the saved table');
like($t->error_log, qr/master announce failed/, 'restart: the master is down');

# Reload and quit while the master hangs.
$master->start;
$master->fault('*', 'stall', 60);
sleep 2;
my $pid = $t->pid;
my $t0 = time;
$t->reload;
ok(wait_until(sub { log_lines($t, qr/mesh: background threads stopped/) }, 10), 'reload while the master hangs: the old worker stopped its threads');
cmp_ok(time - $t0, '<', 8, 'reload: promptly');
ok(admitted_at_once(), 'reload: the new worker serves');
$t0 = time;
$t->stop;
cmp_ok(time - $t0, '<', 8, 'quit while the master hangs: nginx exits promptly');
ok(!kill(0, $pid), 'quit: the master process is gone');

$master->stop;
done_testing();
