#!/usr/bin/perl
# Issue 13, "a control plane you can trust", against the real mesh-master and real nodes:
# - per-node keys: node B's key cannot sign as A nor fetch A's table; the master secret signs
#   for no node;
# - no replay: a request sent again (same nonce) is refused by the master, a real node's
#   captured request too; an answer the master gave (an allow, a table, a heartbeat reply),
#   recorded by a man in the middle (t/lib/mitm_proxy.py) and replayed to another request, is
#   refused by the node;
# - epochs: a master restarted on its database keeps its epoch; a new database is a new epoch,
#   which the node takes (t/epochs.t: older tables refused, a lower version of a new epoch taken);
# - revocation cuts a node off at its next request, and lets it back when lifted.

use strict;
use warnings;

use File::Basename qw(dirname);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use Test::More;

use lib 't/lib';
use Mesh::Test qw(free_port log_lines publish_status reap spawn wait_until);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $json = JSON::PP->new->canonical;
my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3)]);

# The man in the middle, between the nodes and the master.
my $mport = free_port();
my $mitm_pid = spawn('python3', dirname(__FILE__) . '/lib/mitm_proxy.py', '--port', $mport, '--master', $master->url);
ok(wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$mport") }, 10), 'the man in the middle listens');
my $mitm = bless { %$master, port => $mport }, 'Mesh::Master';
$mitm->{pid} = undef;
sub mitm {
	my ($what, $body) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)->request($body ? 'POST' : 'GET', "http://127.0.0.1:$mport/_mitm/$what",
		{ ($body ? (content => $json->encode($body)) : ()) });
	return eval { $json->decode($r->{content}) };
}

sub node {
	my ($id, $role, %o) = @_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $o{via} // $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }');
	$t->run;
	return $t;
}

my $ingest = node('ingest-1', 'ingest', via => $mitm);
my $edge = node('edge-1', 'relay');
ok(wait_until(sub { my $n = $master->nodes; 2 == grep { $_->{alive} } values %$n }, 15), 'two nodes alive');
is(($ingest->read_file('master.key') =~ s/\s+//r), $master->node_key('ingest-1'), 'each node holds its own key');
isnt($master->node_key('ingest-1'), $master->node_key('edge-1'), 'and the keys differ');

# --- per-node keys -------------------------------------------------------------------------
my $beat = sub { { node_id => $_[0], role => 'relay', table_version => 0, uptime_s => 1, streams => [], pushes => [],
	transcodes => [], load => { connections => 0, in_kbps => 0, out_kbps => 0 } } };
my %announce = (node_id => 'ingest-1', role => 'root_relay', rtmp_url => 'rtmp://127.0.0.1:1', http_url => '',
	version => 't', capabilities => { transcode => JSON::PP::false, hls => JSON::PP::false, dash => JSON::PP::false });
my $r = $master->node_call('POST', '/announce', 'ingest-1', \%announce, key => $master->node_key('edge-1'));
is($r->{status}, 401, "edge-1's key cannot announce as ingest-1");
is($r->{data}{error}, 'bad signature', 'refused: bad signature');
is($master->nodes->{'ingest-1'}{role}, 'ingest', 'ingest-1 unchanged');
$r = $master->node_call('POST', '/heartbeat', 'ingest-1', $beat->('ingest-1'), key => $master->node_key('edge-1'));
is($r->{status}, 401, "nor heartbeat as ingest-1");
$r = $master->node_call('GET', '/streams?node_id=ingest-1&since=0&wait=0', 'edge-1');
is($r->{status}, 400, "edge-1 cannot fetch ingest-1's table");
is($r->{data}{error}, 'node_id differs from X-Mesh-Node', 'refused, signed for edge-1') and ok($r->{sig_ok}, 'the refusal is signed');
$r = $master->node_call('POST', '/heartbeat', 'edge-1', $beat->('edge-1'), key => $master->key);
is($r->{status}, 401, 'the master secret signs for no node');
ok(wait_until(sub { $master->log =~ /request signed with the master secret: give the node its own key/ }, 5),
	'and the master says so');
$r = $master->node_call('GET', '/streams?node_id=edge-1&since=0&wait=0', 'edge-1');
is($r->{status}, 200, 'edge-1 fetches its own table') and ok($r->{sig_ok}, 'signed for its request');
my $epoch = $r->{data}{epoch};
like($epoch // '', qr/^[0-9a-f]{32}$/, 'the table carries the master epoch');

# --- a replayed request is refused by the master -------------------------------------------
my $nonce = Mesh::Master::nonce();
$r = $master->node_call('POST', '/heartbeat', 'edge-1', $beat->('edge-1'), nonce => $nonce);
is($r->{status}, 200, 'a heartbeat');
my $again = $master->node_call('POST', '/heartbeat', 'edge-1', $beat->('edge-1'), nonce => $nonce, ts => $r->{ts});
is($again->{status}, 401, 'the same request again: refused');
is($again->{data}{error}, 'nonce already used', 'nonce already used');
# A real node's request, captured on the way and sent again.
ok(wait_until(sub { (mitm('seen') // {})->{heartbeat} }, 10), 'the man in the middle saw heartbeats');
my $resent = mitm('resend', { endpoint => 'heartbeat' });
is($resent->{status}, 401, "ingest-1's captured heartbeat, sent again: refused");
like($resent->{body}, qr/nonce already used/, 'as a replay');

# --- answers replayed to the node are refused ------------------------------------------------
# A heartbeat answer replayed: no good for another heartbeat.
mitm('mode', { endpoint => 'heartbeat', mode => 'replay' });
ok(wait_until(sub { log_lines($ingest, qr/mesh: master heartbeat failed: response refused: bad signature/) }, 10),
	'ingest-1: a replayed heartbeat answer is refused');
mitm('mode', { endpoint => 'heartbeat', mode => 'pass' });

# A table replayed: the table recorded is refused for another poll.
ok(wait_until(sub { (mitm('seen') // {})->{streams} }, 15), 'the man in the middle saw a table');
mitm('mode', { endpoint => 'streams', mode => 'replay' });
ok(wait_until(sub { log_lines($ingest, qr/mesh: master streams failed: response refused: bad signature/) }, 15),
	'ingest-1: a replayed table is refused');

# An allow replayed: with no table for cam1 yet (the man in the middle holds the polls), a
# publish with cam1's key is asked of the master, which allows it; that allow, replayed to the
# question for cam2, is refused: cam2 is not admitted.
mitm('mode', { endpoint => 'streams', mode => 'hold' });
sleep 4;    # the poll in flight ends
my $key = $master->stream_key('cam1');
my $pi = $ingest->port(1);
my $pub = Mesh::Test::publish("rtmp://127.0.0.1:$pi/live/cam1?key=$key", secs => 30);
ok(wait_until(sub { log_lines($ingest, qr/publish accepted: stream "cam1"/) }, 15), 'cam1 admitted by the master');
ok(wait_until(sub { (mitm('seen') // {})->{auth} }, 5), 'the allow went by the man in the middle');
mitm('mode', { endpoint => 'auth', mode => 'replay', match => '"allow":true' });
isnt(publish_status("rtmp://127.0.0.1:$pi/live/cam2?key=$key", secs => 3), 0, 'cam2 with the allow of cam1 replayed: refused');
ok(!log_lines($ingest, qr/publish accepted: stream "cam2"/), 'cam2 never admitted');
ok(log_lines($ingest, qr/auth endpoint failed: response refused: bad signature/),
	'the replayed allow is refused for its signature');
kill 'TERM', $pub;
reap($pub, 5);
mitm('mode', { endpoint => $_, mode => 'pass' }) for qw(auth streams);

# --- revocation ------------------------------------------------------------------------------
my ($st, $d) = $master->admin('PUT', '/admin/nodes/edge-1/revoked', { revoked => JSON::PP::true });
is($st, 200, 'edge-1 revoked');
ok(!$master->nodes->{'edge-1'}{alive}, 'out of the mesh at once');
ok(wait_until(sub { log_lines($edge, qr/mesh: master (heartbeat|announce) failed: refused: node revoked \(401\)/) }, 5),
	'edge-1 is refused at its next request, and says why');
is($master->node_call('GET', '/streams?node_id=edge-1&since=0&wait=0', 'edge-1')->{status}, 401, 'it gets no table');
($st, $d) = $master->admin('GET', '/admin/nodes');
ok((grep { $_->{node_id} eq 'edge-1' && $_->{revoked} } @{$d->{nodes}}), 'the admin API shows it revoked');
$master->admin('PUT', '/admin/nodes/edge-1/revoked', { revoked => JSON::PP::false });
ok(wait_until(sub { $master->nodes->{'edge-1'}{alive} }, 10), 'let back in: alive again');

# --- epochs ------------------------------------------------------------------------------------
# A master restarted on its database: the same epoch, versions ahead. (A table older than the one
# in force, of the same epoch, is refused: t/epochs.t, where a master can be made to send one.)
my $IN_FORCE = qr/mesh: table version (\d+) from master in force/;
my $running = sub { my @v = map { /$IN_FORCE/ ? $1 : () } log_lines($edge, $IN_FORCE); $v[-1] // 0 };
ok(wait_until(sub { $running->() > 0 }, 10), 'edge-1 runs a table') or diag($edge->error_log);
$master->stop;
$master->start;
ok(wait_until(sub { $running->() >= 1000 }, 20), 'after a restart: a version of the next block (' . $running->() . ')');
ok(!log_lines($edge, qr/master epoch/), 'the same epoch');
# A new database: a new epoch, taken (and saved with the table).
$master->stop;
system('sqlite3', "$master->{dir}/master.db", "DELETE FROM meta WHERE k = 'epoch'") == 0 or die 'sqlite3';
$master->start;
my $NEW_EPOCH = qr/mesh: master epoch ([0-9a-f]{32}) \(was \Q$epoch\E\): a new master database/;
ok(wait_until(sub { log_lines($edge, $NEW_EPOCH) }, 20), 'a new epoch is taken') or diag($edge->error_log);
my ($new) = map { /$NEW_EPOCH/ ? $1 : () } log_lines($edge, $NEW_EPOCH);
ok(wait_until(sub { $edge->read_file('table.json') =~ /"epoch":"\Q$new\E"/ }, 5), 'the table file keeps the new epoch');

kill 'TERM', $mitm_pid;
reap($mitm_pid, 5);
$_->stop for $ingest, $edge;
done_testing();
