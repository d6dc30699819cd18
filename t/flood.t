#!/usr/bin/perl

# A flood of 10,000 publishes with unknown keys while the master answers slowly (2 s), from
# several client processes and loopback addresses: half leave right after `publish`, half wait
# half a second for an answer. Meanwhile known keys keep being admitted: keys in the node's
# table without waiting for the master, keys the master allows fast within a bound set by the
# master's own slow answer (the most a question can wait for one already being answered).
# Past the per-address cap the flood is refused with reason `busy` (error log and mesh_status),
# and so is a burst from many addresses past the per-worker cap. The worker's resident memory
# after the flood and a settle period is within a small margin of what it was after a warm-up
# flood of the same shape.
#
# FLOOD (default 10000) sets the flood's size, FLOOD_PROCS (default 4) its client processes.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use JSON::PP;
use List::Util qw(max sum);
use lib 't/lib';
use Mesh::Test qw(sha256_hex wait_until log_lines);
use Mesh::FakeMaster;
use Mesh::Hostile qw(hostile_node run_perturbed client client_bg client_wait client_stop worker_pids rss_kb node_status
	log_mark log_since caps_supported);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $N = $ENV{FLOOD} // 10000;
my $PROCS = $ENV{FLOOD_PROCS} // 4;
my $PER_ADDR = 4;
my $WORKER_CAP = 128;
my $ADDRS = 4;    # flood addresses per client process: $PROCS * $ADDRS * $PER_ADDR <= $WORKER_CAP
my $SLOW = 2;

my $master = Mesh::FakeMaster->new;
$master->set_table('flood-1', { version => 1, role => 'standalone',
	publish => { tk => { key_sha256 => sha256_hex('table-key') } } });
$master->set_auth_default(allow => $F, reason => 'unknown stream', delay => $SLOW);
# one stream per client trying it: two publishers of one stream would be "already publishing"
$master->set_auth($_, allow => $T, ttl_s => 0, credential => 'master-key', delay => 0.05) for qw(mk mk3 mk4 mk5);

my $t = hostile_node(id => 'flood-1', master => $master, timeout => '10s',
	caps => { mesh_auth_pending_max => $WORKER_CAP, mesh_auth_pending_per_addr => $PER_ADDR });
run_perturbed($t);
ok(wait_until(sub { log_lines($t, qr/table version 1 from master in force/) }, 10), 'table in force');
my $url = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $dir = $t->testdir;

sub check {
	my ($name, $args, %o) = @_;
	my @r = client('check', '--url', $url, '--name', $name, '--args', $args, '--timeout', $o{timeout} // 15);
	return $r[0] // { accepted => 0, code => 'no answer from the client', secs => 0 };
}

# The master's own answer times, quiet: the fast allow and the slow deny.
my $mk = check('mk', 'key=master-key');
ok($mk->{accepted}, "quiet: a key the master allows is admitted in $mk->{secs} s");
my $slow = check('nobody', 'key=junk');
ok(!$slow->{accepted}, "quiet: an unknown key is refused after one slow answer ($slow->{secs} s)");
my $slow_s = $slow->{secs} || $SLOW;
my $tk = check('tk', 'key=table-key');
ok($tk->{accepted}, "quiet: a key in the table is admitted in $tk->{secs} s");

# The flood: $PROCS processes, each from its own $ADDRS addresses, 32 connections at a time,
# spread over $SPREAD s at least. With `probe`, known keys publish over and over from
# addresses of their own while it runs: one client with the table's key, three with the key
# the master allows.
my $SPREAD = 12;
sub flood {
	my ($tag, $probe) = @_;
	my %jobs;
	my $each = int($N / $PROCS);
	for my $k (0 .. $PROCS - 1) {
		my $out = "$dir/flood-$tag-$k.json";
		my $pid = client_bg($out, 'flood', '--url', $url, '--count', $each, '--concurrency', 32,
			'--src-net', "127.0.8$k", '--src-count', $ADDRS, '--leave', 0.5, '--hold', 0.5,
			'--prefix', "fl$tag$k-", '--seed', $k, '--rate', $each / $SPREAD);
		$jobs{$pid} = $out;
	}
	my %probes;
	if ($probe) {
		sleep 1;
		for my $p ([ 'tk', 'key=table-key', '127.0.0.2' ], map { [ "mk$_", 'key=master-key', "127.0.0.$_" ] } 3 .. 5) {
			my $out = "$dir/probe-$tag-$p->[2].json";
			my $pid = client_bg($out, 'check', '--url', $url, '--name', $p->[0], '--args', $p->[1],
				'--src', $p->[2], '--repeat', 100000, '--interval', 0.25, '--timeout', 3 * $slow_s + 5);
			push @{$probes{substr $p->[0], 0, 2}}, $pid => $out;
		}
	}
	my $t0 = time;
	my @st = client_wait(240, %jobs);
	my %sum;
	for my $s (@st) { $sum{$_} += $s->{$_} for grep { !/wall/ } keys %$s }
	$sum{wall_s} = sprintf '%.1f', time - $t0 + ($probe ? 1 : 0);
	$sum{processes} = scalar @st;
	# what the known keys saw while the flood ran
	my %res = map { $_ => [ client_stop(@{$probes{$_}}) ] } keys %probes;
	return (\%sum, \%res);
}

sub settle_rss {
	# the slow answers to what was already asked come back, freed memory is reused
	sleep 2 * $SLOW + 1;
	my ($w) = worker_pids($t);
	return ($w, rss_kb($w));
}

my $mark = log_mark($t);
# Two warm-ups: the first fills the bounded structures part way (the answer cache holds up to
# 4,096 answers, kept while they are valid), the second to where they stay.
flood('v', 0);
my ($warm) = flood('w', 1);    # the same shape as the flood measured: known keys too
is($warm->{processes}, $PROCS, "warm-up flood: $warm->{sent} publishes sent in $warm->{wall_s} s "
	. "($warm->{refused} refused, $warm->{waiting} still waiting after 0.5 s, $warm->{left} left)");
my ($w1, $rss1) = settle_rss();
ok($rss1, "worker $w1 after the warm-up flood: VmRSS $rss1 kB");

my ($main, $probes) = flood('m', 1);
cmp_ok($main->{sent}, '>=', 0.95 * $N, "flood: $main->{sent} publishes sent in $main->{wall_s} s "
	. "($main->{refused} refused, $main->{waiting} still waiting after 0.5 s, $main->{left} left)");

my @tk = @{$probes->{tk} // []};
my @mkp = @{$probes->{mk} // []};
cmp_ok(scalar @tk, '>=', 10, scalar(@tk) . ' table-key publishes during the flood');
is(scalar(grep { !$_->{accepted} } @tk), 0, 'during the flood every key in the table is admitted')
	or diag(explain [ grep { !$_->{accepted} } @tk ]);
cmp_ok(max(map { $_->{secs} } @tk) // 99, '<', $slow_s,
	'... each before the master could have answered a single flood question');
cmp_ok(scalar @mkp, '>=', 5, scalar(@mkp) . ' publishes with a key the master allows during the flood');
is(scalar(grep { !$_->{accepted} } @mkp), 0, 'during the flood every key the master allows is admitted')
	or diag(explain [ grep { !$_->{accepted} } @mkp ]);
cmp_ok(max(map { $_->{secs} } @mkp) // 99, '<', 2 * $slow_s + 1,
	sprintf('... each within two slow answers (%.2f s) of its own (%.2f s quiet; longest %.2f s)',
		2 * $slow_s, $mk->{secs}, max(map { $_->{secs} } @mkp) // 0));

my $busy_re = qr/mesh: publish refused: app "live", stream "fl.*", from 127\.0\.8\d\.\d+: busy(,|$)/;
my $busy_log = grep { /$busy_re/ } log_since($t, $mark);
cmp_ok($busy_log, '>', 0, "past the per-address cap the flood is refused with reason busy ($busy_log error-log lines)");
my $st = node_status($t) // {};
my ($busy_count) = map { $_->{count} } grep { $_->{action} eq 'publish' && $_->{reason} eq 'busy' } @{$st->{refusals} // []};
ok(($busy_count // 0) > 0 && $busy_count >= $busy_log, 'mesh_status counts the busy refusals (' . ($busy_count // 0) . ')');

my ($w2, $rss2) = settle_rss();
is($w2, $w1, 'the same worker throughout');
cmp_ok($rss2 / $rss1, '<=', 1.10, "worker memory flat: VmRSS $rss2 kB after the flood, $rss1 kB after the warm-up");

# Past the per-worker cap: many addresses, one waiting publish each.
subtest 'a burst from many addresses past the per-worker cap' => sub {
	my $mark = log_mark($t);
	my $n = 2 * $WORKER_CAP;
	my $out = "$dir/burst.json";
	my $pid = client_bg($out, 'flood', '--url', $url, '--count', $n, '--concurrency', $n, '--src-net', '127.0.9',
		'--src-count', 250, '--leave', 0, '--hold', $slow_s / 2, '--prefix', 'burst');
	sleep 0.5;
	my $ok = check('tk', 'key=table-key');
	ok($ok->{accepted}, "a key in the table is admitted meanwhile ($ok->{secs} s)");
	my ($b) = client_wait(60, $pid => $out);
	$b //= { refused => 0 };
	cmp_ok($b->{refused}, '>=', $n - $WORKER_CAP - 8, "$b->{refused} of $n refused before the answers came");
	my $busy = grep { /publish refused: .* stream "burst.*: busy(,|$)/ } log_since($t, $mark);
	cmp_ok($busy, '>=', $n - $WORKER_CAP - 8, "... with reason busy ($busy error-log lines)");
};

$t->stop(fast => 1);
$master->stop;
done_testing();
