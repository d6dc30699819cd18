#!/usr/bin/perl

# Hostile RTMP clients against a node whose master answers auth slowly, with freed memory
# perturbed (MALLOC_PERTURB_): named cases for the bugs of issue 10 (a replaced pending command
# whose first answer resumes a freed session; an answer admitting whatever command waits; the
# questions of departed clients still asked), then a seeded random driver of 1,000+
# connections (valid, malformed, truncated, odd names, abrupt closes). After it, legitimate
# publishes are admitted and the error log holds no crash, [alert] or [crit].
#
# SEED=<n> replays the random driver's sequences (each connection draws from "<n>/<i>");
# FUZZ_CONNECTIONS (default 1200) and FUZZ_PROCS (default 4) size it.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use JSON::PP;
use lib 't/lib';
use Mesh::Test qw(sha256_hex wait_until log_lines);
use Mesh::FakeMaster;
use Mesh::Hostile qw(hostile_node run_perturbed client client_bg client_wait node_status log_mark log_since);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $BAD = qr/exited on signal|\[alert\]|\[crit\]/;
# nginx-rtmp's own [alert] for a client's Set Chunk Size above 10 MiB: a case of its own below,
# not counted against the random driver.
my $CHUNK_ALERT = qr/\[alert\] .* too big RTMP chunk size:/;

my $master = Mesh::FakeMaster->new;
my $legit_hash = sha256_hex('legit-key');
$master->set_table('adv-1', { version => 1, role => 'standalone', publish => { legit => { key_sha256 => $legit_hash } } });
$master->set_table('adv-relay', { version => 1, role => 'relay' });
$master->set_auth_default(allow => $F, reason => 'unknown stream', delay => 0.5);

my $node = hostile_node(id => 'adv-1', master => $master);
$node->allow_alert($CHUNK_ALERT);
run_perturbed($node);
ok(wait_until(sub { log_lines($node, qr/table version 1 from master in force/) }, 10), 'standalone node: table in force');
my $url = 'rtmp://127.0.0.1:' . $node->port(1) . '/live';

# A publish (or play) the node must admit; retried while a crashed worker is replaced.
sub admitted {
	my ($t, $u, $name, $args, %o) = @_;
	my @r = client('check', '--url', $u, '--name', $name, '--args', $args, '--timeout', $o{timeout} // 10,
		$o{play} ? ('--play') : ());
	return $r[0] // { accepted => 0, code => 'no answer from the client' };
}

# No crash, alert or crit in the error log since `mark`.
sub clean_since {
	my ($t, $mark, $what) = @_;
	my @bad = grep { /$BAD/ } log_since($t, $mark);
	is(join("\n", @bad), '', "$what: no crash, [alert] or [crit] in the error log");
}

# Until the master has had no new auth question for a second (every answer asked for is back,
# or the questions were dropped), at most `secs`.
sub settle {
	my ($m, $secs) = @_;
	my ($n, $since) = (-1, time);
	wait_until(sub {
		my $c = $m->count;
		($n, $since) = ($c, time) if $c != $n;
		return time - $since > 1.2;
	}, $secs // 20);
}

sub script {
	my ($u, $repeat, @steps) = @_;
	return client('script', '--url', $u, '--repeat', $repeat, @steps);
}

# --- (a) the exact crash -----------------------------------------------------------------------

subtest 'two publishes on one connection while the answer is pending, then gone' => sub {
	my $mark = log_mark($node);
	my @r = script($url, 20, 'handshake', 'connect', 'create', 'publish crash-a{i}?key=junk1',
		'publish crash-b{i}?key=junk2', 'sleep 0.05', 'rst');
	is(scalar @r, 20, 'twenty connections ran the sequence');
	settle($master);    # every answer (0.5 s each, two call threads) has come back
	clean_since($node, $mark, 'double publish');
	my $ok = admitted($node, $url, 'legit', 'key=legit-key');
	ok($ok->{accepted}, "the node still admits a publish ($ok->{code})");
};

subtest 'publish then play on one connection while the answer is pending, then gone' => sub {
	my $mark = log_mark($node);
	script($url, 20, 'handshake', 'connect', 'create', 'publish crash-p{i}?key=junk', 'create',
		'play crash-v{i}', 'sleep 0.05', 'close');
	settle($master);
	clean_since($node, $mark, 'publish + play');
	my $ok = admitted($node, $url, 'legit', 'key=legit-key');
	ok($ok->{accepted}, "the node still admits a publish ($ok->{code})");
};

my $relay = hostile_node(id => 'adv-relay', master => $master, apps => 'application relay { mesh on; live on; }');
run_perturbed($relay);
ok(wait_until(sub { log_lines($relay, qr/table version 1 from master in force/) }, 10), 'relay node: table in force');
my $rurl = 'rtmp://127.0.0.1:' . $relay->port(1) . '/relay';

subtest 'a relay whose plays ask the master: two plays on one connection, then gone' => sub {
	my $mark = log_mark($relay);
	script($rurl, 20, 'handshake', 'connect', 'create', 'play crash-r{i}', 'play crash-s{i}', 'sleep 0.05', 'rst');
	script($rurl, 10, 'handshake', 'connect', 'create', 'play crash-t{i}', 'create', 'play crash-u{i}', 'close');
	settle($master);
	clean_since($relay, $mark, 'relay, play + play');
	$master->set_auth('relay-ok', allow => $T, ttl_s => 60);
	my $ok = admitted($relay, $rurl, 'relay-ok', '', play => 1);
	ok($ok->{accepted}, "the relay still admits a viewer the master allows ($ok->{code})");
};

# --- (b) an answer admits only the command it answers ----------------------------------------

subtest "a master's answer admits only the command it answers" => sub {
	my $mark = log_mark($node);
	for my $v ([ 'two streams', 1 ], [ 'one stream id', 0 ]) {
		my ($label, $second_stream) = @$v;
		my ($mine, $theirs) = map { "$_$second_stream" } 'mine', 'theirs';
		$master->set_auth($mine, allow => $T, ttl_s => 60, credential => 'my-key', delay => 0.5);
		$master->set_auth($theirs, allow => $T, ttl_s => 60, credential => 'their-key', delay => 0.3, wrong_delay => 1.5);
		my $out = $node->testdir . "/cheat-$second_stream.json";
		my $pid = client_bg($out, 'script', '--url', $url, 'handshake', 'connect', 'create', "publish $mine?key=my-key",
			$second_stream ? ('create') : (), "publish $theirs?key=junk", 'wait 6', 'close');
		# both answers are back after 1.5 s; the cheat stays connected
		sleep 2.5;
		is(scalar(grep { /publish accepted: stream "\Q$theirs\E"/ } log_since($node, $mark)), 0,
			"$label: the allow for \"$mine\" did not admit \"$theirs\" (error log)");
		my $st = node_status($node) // {};
		ok(!grep({ $_->{stream} eq $theirs } @{$st->{streams} // []}), "$label: mesh_status lists no \"$theirs\"");
		my $owner = admitted($node, $url, $theirs, 'key=their-key');
		ok($owner->{accepted}, "$label: the owner of \"$theirs\" publishes it while the cheat is connected ($owner->{code})");
		client_wait(10, $pid => $out);
	}
	clean_since($node, $mark, 'answers');
};

# --- (c) the questions of departed clients are not asked ---------------------------------------

subtest 'departed clients: their questions are not asked' => sub {
	my $slow = Mesh::FakeMaster->new;
	$slow->set_table('adv-c', { version => 1, role => 'standalone' });
	$slow->auth_serial(1);
	$slow->set_auth_default(allow => $F, reason => 'unknown stream', delay => 2);
	$slow->set_auth('fast', allow => $T, ttl_s => 0, credential => 'fast-key');
	my $t = hostile_node(id => 'adv-c', master => $slow, timeout => '30s',
		caps => { mesh_auth_pending_max => 256, mesh_auth_pending_per_addr => 8 });
	run_perturbed($t);
	ok(wait_until(sub { log_lines($t, qr/table version 1 from master in force/) }, 10), 'node: table in force');
	my $u = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';

	# One answer of each kind, alone.
	my $fast = admitted($t, $u, 'fast', 'key=fast-key');
	ok($fast->{accepted}, "a key the master allows is admitted ($fast->{secs} s)");
	my $one = admitted($t, $u, 'alone', 'key=nobody');
	ok(!$one->{accepted}, "an unknown key is refused after one slow answer ($one->{secs} s)");
	my $slow_s = $one->{secs};

	# 200 clients from 200 addresses ask and leave while the master thinks.
	my ($st) = client('flood', '--url', $u, '--count', 200, '--concurrency', 50, '--src-net', '127.0.5',
		'--src-count', 200, '--leave', 1, '--linger', 0.2, '--prefix', 'dep');
	is($st->{sent}, 200, '200 publishes sent, and their clients left');
	# What was asked before they left is being answered (one at a time); nothing more may be.
	my $in_flight = $slow->count(prefix => 'dep');
	my $t0 = time;
	my $ok = admitted($t, $u, 'fast', 'key=fast-key', timeout => ($in_flight + 2) * $slow_s + 5);
	my $waited = time - $t0;
	my $asked = $slow->count(prefix => 'dep');
	ok($ok->{accepted}, sprintf('after they left, the allowed key is admitted (%.1f s; one slow answer: %.1f s)', $waited, $slow_s));
	cmp_ok($asked, '<=', $in_flight + 2, "the master was asked no more departed questions than the $in_flight "
		. 'already sent when their clients left (a couple of late arrivals allowed)');
	cmp_ok($waited, '<', ($in_flight + 1) * $slow_s + 2, 'the allowed key waited at most for the answers already being given');
	$t->stop(fast => 1);
	$slow->stop;
};

# --- the seeded random driver ------------------------------------------------------------------

subtest 'seeded random command sequences' => sub {
	my $seed = $ENV{SEED} // int(rand(1 << 31));
	my $n = $ENV{FUZZ_CONNECTIONS} // 1200;
	my $procs = $ENV{FUZZ_PROCS} // 4;
	diag("SEED=$seed ($n connections, $procs processes)");
	$master->set_auth_default(allow => $F, reason => 'unknown stream', delay => 0.3, delay_max => 2);
	$master->set_auth('fzok', allow => $T, ttl_s => 5, credential => 'fz-good', delay => 0.3, delay_max => 2);
	my $mark = log_mark($node);
	my %jobs;
	for my $k (0 .. $procs - 1) {
		my $out = $node->testdir . "/fuzz-$k.json";
		my $pid = client_bg($out, 'fuzz', '--url', $url, '--seed', $seed + $k, '--count', int($n / $procs),
			'--concurrency', 12, '--good', 'fzok:fz-good', '--good', 'legit:legit-key',
			'--src-net', "127.0.6$k", '--src-count', 32, '--trace', $node->testdir . "/fuzz-$k.trace");
		$jobs{$pid} = $out;
	}
	my @stats = client_wait(170, %jobs);
	my $conns = 0;
	$conns += $_->{connections} for @stats;
	cmp_ok($conns, '>=', 1000, "the driver made $conns connections");
	diag(join ', ', map { "$_=" . eval { my $k = $_; my $s = 0; $s += $_->{$k} // 0 for @stats; $s } }
		qw(accepted closed_by_server ops errors)) if $ENV{TEST_NGINX_VERBOSE};
	settle($master, 20);    # the answers to the last questions come back (up to 2 s each)
	sleep 1;
	my @bad = grep { /$BAD/ && !/$CHUNK_ALERT/ } log_since($node, $mark);
	is(join("\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]), '', 'no crash, [alert] or [crit] in the error log');
	if (@bad) {
		diag("SEED=$seed: replay with SEED=$seed prove -I t/lib t/adversarial.t "
			. '(TEST_NGINX_LEAVE=1 keeps the traces: fuzz-*.trace in ' . $node->testdir . ')');
	}
	my $ok = admitted($node, $url, 'legit', 'key=legit-key');
	ok($ok->{accepted}, "afterwards a publish with a key in the table is admitted ($ok->{code}, $ok->{secs} s)");
	$master->set_auth('after', allow => $T, ttl_s => 60, credential => 'after-key', delay => 0.3);
	$ok = admitted($node, $url, 'after', 'key=after-key', timeout => 15);
	ok($ok->{accepted}, "afterwards a publish the master allows is admitted ($ok->{code}, $ok->{secs} s)");
	diag("SEED=$seed") unless Test::More->builder->is_passing;
};

# --- a client cannot write [alert] lines ------------------------------------------------------

subtest 'a Set Chunk Size above the limit is no [alert]' => sub {
	my $mark = log_mark($node);
	script($url, 1, 'handshake', 'chunk 2147483647', 'connect', 'wait 0.5', 'close');
	sleep 0.3;
	my @alerts = grep { /\[alert\]|\[crit\]/ } log_since($node, $mark);
	is(join("\n", @alerts), '', 'a stranger cannot make the node log [alert] or [crit] (operators page on those)');
	my $ok = admitted($node, $url, 'legit', 'key=legit-key');
	ok($ok->{accepted}, "the node admits a publish afterwards ($ok->{code})");
};

$node->stop(fast => 1);
$relay->stop(fast => 1);
$master->stop;
done_testing();
