#!/usr/bin/perl

# The reference master guards itself (docs/master.md, "Limits"; docs/protocol.md, "Field
# rules"): every bad announce and heartbeat field gets 400 with a reason and changes nothing;
# a relay with no mesh_rtmp_url is refused and logs the reason once; a heartbeat with a
# table_version near 2^64 no longer wraps the version counter and freezes another node; a
# node past its burst gets 429; and with 300 idle and 100 slow-header connections held open
# (re-opened as the master closes them) under an open-file limit of 256, a real node's
# heartbeats are answered and it is never declared dead.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex hmac_sha256_hex);
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use lib 't/lib';
use Mesh::Test qw(wait_until log_lines);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(nofile => 256,
	args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3)]);
my $json = JSON::PP->new->canonical;
my $port = $master->port;

# A request signed with the node's key, as a node sends it: (status, decoded body).
sub signed {
	my ($method, $pq, $node, $body) = @_;
	my $r = $master->node_call($method, $pq, $node, $body);
	return ($r->{status}, $r->{data});
}

sub node {
	my ($id, $role, %o) = @_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => $o{no_url} ? '' : 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }');
	$t->run;
	return $t;
}

my $ingest = node('ingest-1', 'ingest');
my $edge = node('edge-1', 'relay');
ok(wait_until(sub { my $n = $master->nodes; 2 == grep { $_->{alive} } values %$n }, 10), 'two nodes alive');
$master->stream_key('cam1');
ok(wait_until(sub { log_lines($ingest, qr/table version \d+ from master in force/) }, 10), 'ingest: a table in force');

# --- every bad field: 400 with its reason --------------------------------------------------
my %announce = (node_id => 'mallory', role => 'ingest', rtmp_url => 'rtmp://127.0.0.1:1935',
	http_url => '', version => 't', capabilities => { transcode => JSON::PP::false, hls => JSON::PP::false, dash => JSON::PP::false });
my @bad_announces = (
	[ { role => 'relay', rtmp_url => '' }, 'no rtmp_url for a relay node' ],
	[ { role => 'root_relay', rtmp_url => '' }, 'no rtmp_url for a root_relay node' ],
	[ { rtmp_url => 'rtmp://' }, 'invalid rtmp_url: no host' ],
	[ { rtmp_url => 'rtmp://:1935/relay' }, 'invalid rtmp_url: no host' ],
	[ { rtmp_url => 'http://h:1935' }, 'invalid rtmp_url: not an rtmp:// url' ],
	[ { rtmp_url => 'rtmp://h:70000' }, 'invalid rtmp_url: invalid port' ],
	[ { rtmp_url => 'rtmp://u@h' }, 'invalid rtmp_url: invalid character' ],
	[ { rtmp_url => 'rtmp://h/' . ('x' x 600) }, 'rtmp_url longer than 512 bytes' ],
	[ { http_url => 'http://' }, 'invalid http_url: no host' ],
	[ { version => 'v' x 65 }, 'version longer than 64 bytes' ],
	[ { node_id => 'm/x' }, 'node_id differs from X-Mesh-Node' ],
);
# (each from its own node id: a node's budget of announces and heartbeats is 10 at once)
my $seq = 0;
for my $c (@bad_announces) {
	my ($patch, $why) = @$c;
	my $id = 'm' . ++$seq;
	my ($st, $d) = signed('POST', '/announce', $id, { %announce, node_id => $id, %$patch });
	is($st, 400, "announce $why: 400");
	is($d->{error}, $why, "announce $why: the reason");
}
ok(!(grep { /^m\d+$/ } keys %{$master->nodes}), 'no bad announce registered a node');
my ($st, $d) = signed('POST', '/announce', 'mallory', { %announce, role => 'edge' });
is($st, 400, 'an unknown role: 400');
like($d->{error}, qr/^bad body: unknown variant/, 'an unknown role: the reason');

($st) = signed('POST', '/announce', 'mallory', { %announce, rtmp_url => '' });
is($st, 200, 'an ingest with no rtmp_url: taken (nobody pushes to it)');
my %beat = (node_id => 'mallory', role => 'ingest', table_version => 0);
my $stat = { stream => 'cam9', source => 'broadcaster', viewers => 0, in_kbps => 0 };
my @bad_beats = (
	[ { table_version => '18446744073709551614' }, 'table_version larger than 9007199254740992' ],
	[ { uptime_s => '9007199254740993' }, 'uptime_s larger than 9007199254740992' ],
	[ { load => { connections => '18446744073709551615', in_kbps => 0, out_kbps => 0 } }, 'load.connections larger than 9007199254740992' ],
	[ { streams => [ { %$stat, stream => '../x' } ] }, 'invalid id in streams[0].stream' ],
	[ { streams => [ { %$stat, source => 'a b' } ] }, 'invalid id in streams[0].source' ],
	[ { streams => [ $stat, $stat ] }, 'duplicate stream in streams[1]' ],
	[ { streams => [ map { { %$stat, stream => "s$_" } } 0 .. 10000 ] }, 'more than 10000 entries in streams' ],
	[ { pushes => [ { stream => 'cam9', to => '', state => 'connected' } ] }, 'invalid id in pushes[0].to' ],
	[ { transcodes => [ { stream => 'cam9', state => 'x' x 40, restarts => 0 } ] }, 'transcodes.state longer than 32 bytes' ],
);
for my $c (@bad_beats) {
	my ($patch, $why) = @$c;
	my $id = 'm' . ++$seq;
	my $body = $json->encode({ %beat, node_id => $id, %$patch });
	$body =~ s/"(\d{16,})"/$1/g;    # the big numbers as JSON numbers
	my ($st, $d) = signed('POST', '/heartbeat', $id, $body);
	is($st, 400, "heartbeat $why: 400");
	is($d->{error}, $why, "heartbeat $why: the reason");
}
ok(!$master->live->{cam9}, 'no refused heartbeat made a stream live');
($st, $d) = signed('GET', '/streams?node_id=mallory&since=18446744073709551615&wait=0', 'mallory');
is($st, 400, 'a poll since 2^64-1: 400');
is(HTTP::Tiny->new->get($master->url . '/healthz')->{content}, "ok\n", 'the master is healthy');

# A real relay with no mesh_rtmp_url: refused, the reason logged once, never placed.
my $nourl = node('edge-nourl', 'relay', no_url => 1);
my $refusal = qr/master announce failed: refused: no rtmp_url for a relay node \(400\)/;
ok(wait_until(sub { log_lines($nourl, $refusal) }, 10), 'no mesh_rtmp_url: the reason logged');
sleep 5;
is(scalar(() = log_lines($nourl, $refusal)), 1, 'no mesh_rtmp_url: logged once');
cmp_ok(scalar(() = $master->log =~ /invalid field.*node=edge-nourl/g), '>=', 2, 'no mesh_rtmp_url: the node retried');
ok(!$master->nodes->{'edge-nourl'}, 'no mesh_rtmp_url: not registered');
unlike($master->log, qr{"/relay"|node_url":"/relay}, 'no "/relay" handed out');
$nourl->stop;

# --- the version-wrap attack -------------------------------------------------------------------
sleep 4;    # mallory's budget refilled
($st) = signed('POST', '/heartbeat', 'mallory', $json->encode({ %beat, table_version => 0 }) =~ s/"table_version":0/"table_version":18446744073709551614/r);
is($st, 400, 'a heartbeat with table_version 2^64-2: refused');
$master->stream_key('cam2');
ok(wait_until(sub { log_lines($ingest, qr/table version (\d+) from master in force/) && $ingest->read_file('table.json') =~ /cam2/ }, 10),
	'the ingest takes the next table');
my ($v) = (log_lines($ingest, qr/table version (\d+) from master in force/))[-1] =~ /table version (\d+)/;
cmp_ok($v, '<', 2**40, "its version did not jump ($v)");
# 2^53 is allowed (a node of a lost database may hold a big one): the counter follows it up
# to 2^52 only, so the tables it hands out stay under the 2^53 that every node may report.
($st) = signed('POST', '/heartbeat', 'mallory', $json->encode({ %beat, table_version => 0 }) =~ s/"table_version":0/"table_version":9007199254740992/r);
is($st, 200, 'a heartbeat with table_version 2^53: taken');
$master->stream_key('cam3');
ok(wait_until(sub { log_lines($ingest, qr/table version 450359962737\d{4} from master in force/) }, 10), 'the ingest takes a table numbered past 2^52');
$master->stream_key('cam4');
ok(wait_until(sub { $ingest->read_file('table.json') =~ /cam4/ }, 10), 'and the next one: not frozen');

# --- 429 past a node's burst ---------------------------------------------------------------------
my @st = map { (signed('POST', '/heartbeat', 'mallory', \%beat))[0] } 1 .. 20;
ok((grep { $_ == 429 } @st), 'a heartbeat flood: 429 after a burst (' . join(',', @st) . ')');
ok(!(grep { $_ != 200 && $_ != 429 } @st), 'and nothing else');

# --- 300 idle and 100 slow-header connections, held 45 s -----------------------------------------
sub metric {
	my ($name) = @_;
	my $text = HTTP::Tiny->new(timeout => 10)->get($master->url . '/admin/metrics',
		{ headers => { Authorization => 'Bearer test-admin-token' } })->{content} // '';
	return $text =~ /^\Q$name\E (\d+)$/m ? $1 : 0;
}
my $edge_failures = sub { scalar(() = log_lines($edge, qr/master heartbeat failed/)) };
my $failures0 = $edge_failures->();
my (@idle, @slow);
my $open = sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Blocking => 1, Timeout => 2) };
push @idle, $open->() for 1 .. 300;
for (1 .. 100) {
	my $s = $open->() or next;
	syswrite($s, "POST /heartbeat HTTP/1.1\r\nHost: x\r\n");
	push @slow, $s;
}
my $held = grep { defined } @idle, @slow;
cmp_ok($held, '>=', 300, "$held connections opened");
my ($reopened, $t0, $last_drip, @beats) = (0, time, 0);
while (time - $t0 < 45) {
	my $sel = IO::Select->new(grep { defined } @idle, @slow);
	for my $s ($sel->can_read(0.5)) {
		my $buf;
		next if sysread($s, $buf, 4096);
		# closed by the master: open another in its place
		for my $list (\@idle, \@slow) {
			for my $i (0 .. $#$list) {
				next unless defined $list->[$i] && $list->[$i] == $s;
				close $s;
				$list->[$i] = $open->();
				syswrite($list->[$i], "POST /heartbeat HTTP/1.1\r\n") if $list == \@slow && $list->[$i];
				$reopened++;
			}
		}
	}
	if (time - $last_drip > 2) {
		syswrite($_, "X-Slow: 1\r\n") for grep { defined } @slow;
		$last_drip = time;
		# a signed heartbeat on a new connection, timed
		my $t = time;
		my ($st) = signed('POST', '/heartbeat', 'mallory', \%beat);
		push @beats, [ $st, time - $t ];
	}
}
my $n = $master->nodes;
close $_ for grep { defined } @idle, @slow;
my @lat = sort { $a <=> $b } map { $_->[1] } @beats;
diag(sprintf("re-opened %d connections the master closed; %d heartbeats on new connections: median %.1f ms, max %.1f ms",
	$reopened, scalar @lat, 1000 * $lat[@lat / 2], 1000 * $lat[-1]));
is(scalar(grep { $_->[0] != 200 } @beats), 0, 'under the flood: heartbeats on new connections answered 200');
cmp_ok($lat[-1], '<', 2, 'under the flood: each within 2 s');
ok($n->{'edge-1'}{alive} && $n->{'ingest-1'}{alive}, 'under the flood: both nodes alive');
is($edge_failures->() - $failures0, 0, 'under the flood: no heartbeat of edge-1 failed');
unlike($master->log, qr/node dead: .*node=(edge-1|ingest-1)\b/, 'under the flood: no real node declared dead');
cmp_ok(metric('mesh_master_connections_evicted_total'), '>', 0, 'the cap was reached: strangers evicted (' . metric('mesh_master_connections_evicted_total') . ')');
unlike($master->log, qr/panicked/, 'the master did not panic');
is(HTTP::Tiny->new->get($master->url . '/healthz')->{content}, "ok\n", 'after the flood: healthy');

$_->stop for $ingest, $edge;
$master->stop;
done_testing();
