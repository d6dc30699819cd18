#!/usr/bin/perl

# Resync as soon as the master is back (issue 13, items 6 and 9). The node long-polls with
# `mesh_poll_wait 25s`, so a poll the master lost would hold the node back for ~27 s; every
# case below wants the table changed at the master in force within 2 s of the recovery:
# - the reference master stopped (SIGSTOP) and continued (SIGCONT);
# - the reference master restarted on its database (recovery: the end of its startup grace);
# - the fake master holding the long poll without answering it (a poll it lost) while it
#   answers everything else: the heartbeat answer says a newer table is there, the node fetches
#   it at once;
# - the fake master stalling every streams call: the node logs once that it is behind and
#   cannot fetch, and takes the table when the master answers again (here within 2 s plus the
#   timeout of the fetch lost in the stall).
# And a role change from heartbeats racing table changes never rolls the table back.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Mesh::Test qw(wait_until log_lines);
use Mesh::Master;
use Mesh::FakeMaster;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $IN_FORCE = qr/mesh: table version (\d+) from master in force \(was (\d+)\)/;

sub node_under {
	my ($master, $id) = @_;
	my $t = Mesh::Test->new(name => $id);
	chmod 0777, $t->testdir;
	$t->write_file('master.key', $master->node_key($id) . "\n");
	$t->write_file('table.json', '{"version": 0}');
	my $murl = $master->url;
	$t->write_node_conf(rtmp => qq{
    mesh_node_id $id;
    mesh_role ingest;
    mesh_table_file table.json;
    mesh_master $murl;
    mesh_master_key_file master.key;
    mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;
    mesh_heartbeat_interval 1s;
    mesh_poll_wait 25s;
    mesh_master_timeout 2s;
});
	$t->run;
	return $t;
}

sub versions { map { [ /$IN_FORCE/ ] } log_lines($_[0], $IN_FORCE) }
sub running { my @v = versions($_[0]); @v ? $v[-1][0] : 0 }

# Seconds from `t0` until a table newer than `v` is in force (undef past `secs`).
sub in_force_after {
	my ($t, $v, $t0, $secs) = @_;
	my $ok = wait_until(sub { running($t) > $v }, $secs);
	return $ok ? time - $t0 : undef;
}

sub within_2s {
	my ($took, $what) = @_;
	ok(defined $took && $took < 2, sprintf('%s: new table in force %s after the recovery', $what,
		defined $took ? sprintf('%.2f s', $took) : 'not at all'));
	diag(sprintf('%s: %.2f s', $what, $took // -1));
}

my $took;

# --- The reference master: stall, then restart. ---
my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 60 --max-poll-wait 30)]);
$master->stream_key('cam0');
my $t = node_under($master, 'ingest-1');
ok(wait_until(sub { running($t) > 0 }, 10), 'first table in force');
sleep 2;    # a long poll is held at the master now

# Stall: 8 s stopped, then a change made as soon as it runs again.
kill 'STOP', $master->{pid};
ok(wait_until(sub { log_lines($t, qr/master heartbeat failed/) }, 10), 'stall: the heartbeat fails');
sleep 6;
my $v = running($t);
kill 'CONT', $master->{pid};
my $t0 = time;
$master->stream_key('cam1');
within_2s(in_force_after($t, $v, $t0, 40), 'master stalled 8 s');

# A longer stall (past the poll's own timeout of 27 s), so the node has backed off.
kill 'STOP', $master->{pid};
sleep 35;
$v = running($t);
kill 'CONT', $master->{pid};
$t0 = time;
$master->stream_key('cam2');
within_2s(in_force_after($t, $v, $t0, 40), 'master stalled 35 s');

# Restart on the same database: down 20 s (connections refused: the node's backoff grows past
# 8 s), then serving tables again after its startup grace (2 heartbeat intervals + 1 s).
$master->stop;
sleep 20;
$v = running($t);
$master->start;
my $up = time;
$master->stream_key('cam3');
$took = in_force_after($t, $v, $up, 40);
my $grace = 3;
within_2s(defined $took ? $took - $grace : undef, 'master restarted (after its startup grace)');
diag(sprintf('restart: %.2f s after the master was started', $took // -1));
ok(wait_until(sub { log_lines($t, qr/master heartbeat is back/) }, 5), 'restart: heartbeat back');
$t->stop;
$master->stop;

# --- The fake master: a long poll it holds without answering. ---
my $fake = Mesh::FakeMaster->new;
$fake->set_table('ingest-2', { version => 1, role => 'ingest' });
my $f = node_under($fake, 'ingest-2');
ok(wait_until(sub { running($f) >= 1 }, 10), 'fake: table v1 in force');
sleep 1;
# A long poll the master lost (held, deaf to changes), the master otherwise answering: the
# poll held since before the fault brings v2, the next one is lost.
$fake->fault('streams', 'lostpoll', 120);
$fake->set_table('ingest-2', { version => 2, role => 'ingest' });
ok(wait_until(sub { running($f) >= 2 }, 5), 'fake: v2 by the poll held before the fault');
sleep 1.5;
$fake->set_table('ingest-2', { version => 3, role => 'ingest' });
$t0 = time;
within_2s(in_force_after($f, 2, $t0, 40), 'fake master, the long poll lost');
ok(log_lines($f, qr/master holds table version 3 for this node, which runs 2: the long poll has not brought it, fetching it now/),
	'fake: the stale poll logged');

# The master stalls every streams call: behind, and the node says it cannot fetch (once).
$fake->fault('streams', 'stall', 120);
$fake->set_table('ingest-2', { version => 4, role => 'ingest' });
ok(wait_until(sub { log_lines($f, qr/master holds table version 4 for this node but it cannot be fetched: timed out; keeping table version 3/) }, 10),
	'fake: cannot fetch while the master stalls, logged');
sleep 3;
is(scalar(log_lines($f, qr/cannot be fetched/)), 1, 'fake: logged once, not at each heartbeat');
$fake->fault('streams', 'ok');
$t0 = time;
# Here the fetch in flight when the master recovers is lost with the stall: it runs out its
# timeout (mesh_master_timeout, 2 s) before the next one.
$took = in_force_after($f, 3, $t0, 40);
ok(defined $took && $took < 2 + 2, sprintf('fake master stalling every streams call: new table %.2f s after the recovery', $took // -1));
diag(sprintf('fake master stalling every streams call: %.2f s', $took // -1));

# Role changes from heartbeats racing table changes: the table never goes back.
my $n = 4;
for my $i (1 .. 20) {
	$fake->set_role('ingest-2', $i % 2 ? 'root_relay' : 'ingest');
	$fake->set_table('ingest-2', { version => ++$n });
	sleep 0.35;    # not a divisor of the heartbeat interval
}
ok(wait_until(sub { running($f) == $n }, 10), "race: table v$n in force");
sleep 2;
my @seen = versions($f);
my @back = grep { $_->[0] < $_->[1] } @seen;
is(scalar @back, 0, 'race: no table replaced by an older one') or diag(explain(\@back));
my %times;
$times{$_->[0]}++ for @seen;
is(scalar(grep { $times{$_} > 1 } keys %times), 0, 'race: each version taken once')
	or diag(explain(\%times));
ok(log_lines($f, qr/master sets role "root_relay"/), 'race: the roles were applied')
	or diag(join "\n", log_lines($f, qr/mesh: /));
unlike($f->error_log, qr/test-master-key/, 'no master key in the log');

$f->stop;
$fake->stop;
done_testing();
