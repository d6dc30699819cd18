#!/usr/bin/perl

# An outsider's attacks on the RTMP admission of issue 10 (session lifetime by design, bounded
# work per stranger), each a named case that failed before its fix:
#  - a second publish on an admitted connection: one more outgoing push per command;
#  - publish and deleteStream in a loop: pushes opened faster than closed ones go, until
#    `worker_connections are not enough` ([alert]);
#  - tokenless HLS entry requests: each queued another call for the question already asked,
#    until the queue was full and known keys were refused `busy`;
#  - one viewer token held on many connections: one known-lane call per session and re-check,
#    so a known broadcaster waited behind them;
#  - a credential the master denies since stays "known" (no strangers' caps);
#  - junk keys filling the answer cache flushed every cached allow with them;
#  - askers of one question share its call, and those that left are not resumed.
# Nodes run with MALLOC_PERTURB_ (Mesh::Hostile); the error log must hold no crash, [alert] or
# [crit] afterwards.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use lib 't/lib';
use Mesh::Test qw(sha256_hex wait_until log_lines);
use Mesh::FakeMaster;
use Mesh::Hostile qw(hostile_node run_perturbed client client_bg client_wait client_stop node_status log_mark log_since);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $T = JSON::PP::true;
my $F = JSON::PP::false;
my $BAD = qr/exited on signal|\[alert\]|\[crit\]/;
my $HOLD = 't/lib/rt_hold.py';

# A node with MALLOC_PERTURB_ (Mesh::Hostile's hostile_node: RTMP on PORT_1, /status and with
# `hls` /hls/ on PORT_2), running; with a master, its table comes from there (and is in force).
sub node {
	my (%o) = @_;
	my $t = hostile_node(%o);
	run_perturbed($t);
	my $v = $o{version} // 1;
	ok(wait_until(sub { log_lines($t, qr/table version $v from master in force/) }, 10), "$o{id}: table in force")
		if $o{master};
	return $t;
}

sub url { 'rtmp://127.0.0.1:' . $_[0]->port(1) . '/live' }

# One well-behaved publish (or play): the client's JSON answer.
sub check {
	my ($t, $name, $args, %o) = @_;
	my @r = client('check', '--url', url($t), '--name', $name, '--args', $args, '--timeout', $o{timeout} // 10,
		$o{play} ? ('--play') : ());
	return $r[0] // { accepted => 0, code => 'no answer from the client', secs => 0 };
}

# Many sessions of one publish or play, admitted and held open in the background: the pid,
# after every one has its answer (their JSON summary in $out).
sub hold {
	my ($t, $out, $n, $name, $args, %o) = @_;
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		open STDOUT, '>', $out or POSIX::_exit(126);
		open STDERR, '>', '/dev/null' unless $ENV{TEST_NGINX_VERBOSE};
		exec 'python3', '-B', $HOLD, '--url', url($t), '--name', $name, '--args', $args, '--count', $n,
			'--concurrency', 48, '--hold', $o{hold} // 120, $o{play} ? ('--play') : () or POSIX::_exit(127);
	}
	wait_until(sub { -s $out }, 60);
	return $pid;
}

# RT_ONLY=<regex> runs only the cases whose names match.
sub case {
	my ($name, $code) = @_;
	return if $ENV{RT_ONLY} && $name !~ /$ENV{RT_ONLY}/;
	subtest $name => $code;
}

sub clean {
	my ($t, $what) = @_;
	is(join("\n", grep { /$BAD/ } split /\n/, $t->error_log), '', "$what: no crash, [alert] or [crit]");
}

case 'a second publish on an admitted connection is refused: no second push' => sub {
	my $target = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => Mesh::Test::free_port(),
		Listen => 256, ReuseAddr => 1) or die "listen: $!";
	my $tp = $target->sockport;
	my $table = encode_json({ version => 1, role => 'ingest',
		publish => { cam1 => { key_sha256 => sha256_hex('k1') }, cam2 => { key_sha256 => sha256_hex('k2') } },
		ingest => { map { $_ => [ { node_id => 'root-1', node_url => "rtmp://127.0.0.1:$tp/relay", node_key => 'hk' } ] }
			qw(cam1 cam2) } });
	my $t = node(id => 'rt-ingest', table => $table);
	my $out = $t->testdir . '/twice.json';
	my $pid = client_bg($out, 'script', '--url', url($t), 'handshake', 'connect', 'create',
		(map { 'publish cam1?key=k1' } 1 .. 30), 'publish cam2?key=k2', 'wait 2', 'close');
	my ($sel, @conns, $st) = (IO::Select->new($target));
	my $end = time + 3;
	while (time < $end) {
		push @conns, scalar $target->accept if $sel->can_read(0.1);
		$st //= node_status($t) if time > $end - 2;    # while the client is still connected
	}
	client_wait(10, $pid => $out);
	is(scalar @conns, 1, 'one push to the root relay for thirty publishes of one stream on one connection');
	ok(log_lines($t, qr/publish refused: app "live", stream "cam1", from 127\.0\.0\.1: already admitted on this connection/),
		'the second publish is refused, with its reason');
	is(scalar(log_lines($t, qr/publish accepted: stream "cam2"/)), 0, 'a publish of another stream on it is not admitted');
	ok(!grep({ $_->{stream} eq 'cam2' } @{($st // {})->{streams} // []}), 'mesh_status lists no ghost "cam2"');
	my $ok = check($t, 'cam2', 'key=k2');
	ok($ok->{accepted}, "cam2 publishes from its own connection ($ok->{code})");
	clean($t, 'second publish');
};

case 'publish and deleteStream in a loop: one push at a time, no [alert]' => sub {
	my $target = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => Mesh::Test::free_port(),
		Listen => 1024, ReuseAddr => 1) or die "listen: $!";
	my $tp = $target->sockport;
	my $table = encode_json({ version => 1, role => 'ingest', publish => { cam1 => { key_sha256 => sha256_hex('k1') } },
		ingest => { cam1 => [ { node_id => 'root-1', node_url => "rtmp://127.0.0.1:$tp/relay", node_key => 'hk' } ] } });
	my $t = node(id => 'rt-cycle', table => $table, worker_connections => 512);
	my $out = $t->testdir . '/cycle.json';
	my $pid = client_bg($out, 'script', '--url', url($t), 'handshake', 'connect', 'create',
		(map { ('publish cam1?key=k1', 'deletestream') } 1 .. 2000), 'wait 1', 'close');
	my ($sel, $n) = (IO::Select->new($target), 0);
	my $end = time + 4;
	while (time < $end) {
		next unless $sel->can_read(0.05);
		close scalar $target->accept;
		$n++;
	}
	client_wait(10, $pid => $out);
	is($n, 1, 'one push to the root relay for 2,000 publish + deleteStream rounds in one burst');
	ok(log_lines($t, qr/publish refused: app "live", stream "cam1", from 127\.0\.0\.1: publishing again too soon/),
		'the second publish within a second is refused, with its reason');
	my $ok = check($t, 'cam1', 'key=k1');
	ok($ok->{accepted}, "the stream publishes from a new connection ($ok->{code})");
	clean($t, 'publish loop');
};

case 'tokenless HLS entry requests queue one call, and known keys are still admitted' => sub {
	my $m = Mesh::FakeMaster->new;
	$m->set_table('rt-hls', { version => 1, role => 'standalone' });
	$m->set_auth('legit', allow => $T, ttl_s => 1, credential => 'legit-key');
	$m->set_auth_default(allow => $F, reason => 'unknown stream', delay => 2);
	my $t = node(id => 'rt-hls', master => $m, hls => 1);
	my $ok = check($t, 'legit', 'key=legit-key');
	ok($ok->{accepted}, "the master allows a key: it is known from now on ($ok->{code})");
	sleep 1.2;    # its cached answer has run out: the next publish asks again, in the known lane
	my @held;
	for (1 .. 1100) {
		my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(2)) or last;
		print $c "GET /hls/junk/master.m3u8 HTTP/1.1\r\nHost: node\r\n\r\n";
		push @held, $c;
	}
	is(scalar @held, 1100, 'a stranger sent 1,100 tokenless entry requests');
	sleep 0.5;
	$ok = check($t, 'legit', 'key=legit-key');
	ok($ok->{accepted}, "the known key is admitted meanwhile ($ok->{code})");
	sleep 2.5;
	cmp_ok($m->count(prefix => 'junk'), '<=', 2, 'the master was asked about the stranger once, not once per request');
	close $_ for @held;
	clean($t, 'tokenless requests');
};

my $m = Mesh::FakeMaster->new;
$m->set_table('rt-sa', { version => 1, role => 'standalone' });
my $t = node(id => 'rt-sa', master => $m);

case 'one viewer token on many connections: re-checks share a call, known keys pass' => sub {
	$m->set_auth('legit1', allow => $T, ttl_s => 1, credential => 'legit-key');
	$m->set_auth('show', allow => $T, ttl_s => 4, credential => 'tok', delay => 1);
	ok(check($t, 'legit1', 'key=legit-key')->{accepted}, 'a broadcaster the master allows');
	ok(check($t, 'show', 'token=tok', play => 1)->{accepted}, 'a viewer the master allows');
	my $out = $t->testdir . '/viewers.json';
	my $pid = hold($t, $out, 300, 'show', 'token=tok', play => 1);
	my ($sum) = map { decode_json($_) } grep { /^\{/ } split /\n/, $t->read_file('viewers.json');
	is($sum->{accepted} // 0, 300, 'the token admits 300 sessions (from the cache)');
	my $asked = $m->count(prefix => 'show');
	sleep 6;    # their admissions ran out (4 s): every session is re-checked
	my $ok = check($t, 'legit1', 'key=legit-key');
	ok($ok->{accepted}, "the known broadcaster is admitted while they are re-checked ($ok->{code}, $ok->{secs} s)");
	cmp_ok($m->count(prefix => 'show') - $asked, '<=', 4, 'one call per re-check round, not one per session');
	kill 'TERM', $pid;
	waitpid $pid, 0;
	clean($t, 're-checks');
};

case 'a credential the master denies since is no longer known' => sub {
	$m->set_auth('revoked', allow => $T, ttl_s => 1, credential => 'old-key');
	ok(check($t, 'revoked', 'key=old-key')->{accepted}, 'allowed once');
	$m->set_auth('revoked', allow => $T, ttl_s => 1, credential => 'new-key', wrong_delay => 0.5);
	sleep 1.2;
	ok(!check($t, 'revoked', 'key=old-key')->{accepted}, 'the old key is denied now');
	sleep 1.2;    # the denial ran out of the cache too
	$m->set_auth('revoked', allow => $T, ttl_s => 1, credential => 'new-key', wrong_delay => 3);
	my $mark = log_mark($t);
	my %jobs;
	for my $i (1 .. 12) {
		my $out = $t->testdir . "/revoked-$i.json";
		$jobs{client_bg($out, 'script', '--url', url($t), 'handshake', 'connect', 'create',
			'publish revoked?key=old-key', 'wait 4', 'close')} = $out;
	}
	client_wait(20, %jobs);
	my $busy = grep { /publish refused: app "live", stream "revoked".*: busy/ } log_since($t, $mark);
	cmp_ok($busy, '>=', 4, "past the per-address cap (8) it is refused busy like a stranger's ($busy of 12)");
	clean($t, 'revoked key');
};

case 'junk keys filling the answer cache do not flush the known ones' => sub {
	$m->set_auth('kept', allow => $T, ttl_s => 600, credential => 'kept-key');
	$m->set_auth_default(allow => $F, reason => 'unknown stream', ttl_s => 600);
	ok(check($t, 'kept', 'key=kept-key')->{accepted}, 'an allowed key, cached for 10 minutes');
	my $asked = $m->count(prefix => 'kept');
	my @r = client('flood', '--url', url($t), '--count', 4400, '--concurrency', 64, '--src-net', '127.0.9',
		'--src-count', 64, '--leave', 0, '--hold', 5, '--prefix', 'junkfill');
	cmp_ok($m->count(prefix => 'junkfill'), '>=', 4100, 'the master denied over 4,096 distinct junk keys');
	my $ok = check($t, 'kept', 'key=kept-key');
	ok($ok->{accepted}, "the known key is admitted ($ok->{code})");
	is($m->count(prefix => 'kept') - $asked, 0, 'from its cached answer: the master was not asked again');
	clean($t, 'cache flood');
};

case 'askers of one question share its call; those that left are not resumed' => sub {
	$m->set_auth('shared', allow => $T, ttl_s => 60, credential => 'tok2', delay => 1.5);
	my $asked = $m->count(prefix => 'shared');
	my %jobs;
	for my $i (1 .. 16) {
		my $out = $t->testdir . "/shared-$i.json";
		my @end = $i % 2 ? ('sleep 0.3', 'rst') : ('wait 4', 'close');
		$jobs{client_bg($out, 'script', '--url', url($t), '--src', "127.0.8.$i", 'handshake', 'connect', 'create',
			'play shared?token=tok2', @end)} = $out;
	}
	my @r = client_wait(20, %jobs);
	my $started = grep { grep { $_->[1] eq 'status' && $_->[2] eq 'NetStream.Play.Start' } @{$_->{events}} } @r;
	is($started, 8, 'the eight that stayed play') or diag(encode_json(\@r));
	is($m->count(prefix => 'shared') - $asked, 1, 'one call for sixteen askers');
	my $st = node_status($t) // {};
	is($st->{auth}{pending} // -1, 0, 'nothing left waiting (after every case on this node)');
	is($st->{auth}{pending_unknown} // -1, 0, 'no stranger counted any more');
	is($st->{auth}{suspended} // -1, 0, 'no session left suspended');
	clean($t, 'shared question');
};

done_testing();
