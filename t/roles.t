#!/usr/bin/perl
# Issue 13, "roles are granted, not claimed", against the real mesh-master and real nodes
# (each with its own key), the master auto-approving ingest only:
# - a new relay waits for approval: the master answers its announce 403 "awaiting approval",
#   lists it as pending, gives it no table (no viewer keys); the node logs it once and its
#   mesh_status says awaiting_approval;
# - the admin grants it relay: it takes its table (viewer keys), and plays a stream;
# - auto-approval grants the ingest the role it asked for, kept in the database;
# - a node configured as a relay but granted ingest gets no viewer keys;
# - an approved ingest announcing (and heartbeating) as root_relay stays an ingest.

use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use Test::More;

use lib 't/lib';
use Mesh::Test qw(log_lines probe publish reap wait_until);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(auto_approve => 'ingest',
	args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3)]);
my $key = $master->stream_key('cam1');
my $token = $master->viewer_token('cam1');
my $ua = HTTP::Tiny->new(timeout => 10);

my %node;
sub node {
	my ($id, $role) = @_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }',
		($role eq 'relay' ? (hls => { locations => 'location = /status { mesh_status; }' }) : ()));
	$t->allow_alert(qr/unknown process \d+ exited on signal 9/);
	$t->run;
	$node{$id} = $t;
	return $t;
}
sub status {
	my $r = $ua->get('http://127.0.0.1:' . $node{$_[0]}->port(2) . '/status');
	return $r->{success} ? decode_json($r->{content}) : undef;
}
sub announce_link { my $s = status($_[0]) or return undef; (grep { $_->{link} eq 'announce' } @{$s->{master} // []})[0] }
sub table_file { my $t = eval { decode_json($node{$_[0]}->read_file('table.json')) }; $t // {} }

# --- auto-approval: the ingest is granted what it asked for ---------------------------------
node('ingest-1', 'ingest');
ok(wait_until(sub { my $n = $master->nodes->{'ingest-1'}; $n && $n->{alive} }, 10), 'ingest-1 auto-approved and alive');
is($master->nodes->{'ingest-1'}{granted_role}, 'ingest', 'granted ingest');
# The master logs the grant once the database has it, which may be after the admin API shows it.
ok(wait_until(sub { $master->log =~ /role granted by auto-approval node=ingest-1 role=ingest|node=ingest-1 role=ingest.*role granted by auto-approval/ }, 5),
	'the master says so');

# --- a relay waits for approval --------------------------------------------------------------
node('edge-1', 'relay');
ok(wait_until(sub { my $n = $master->nodes->{'edge-1'}; $n && $n->{pending} }, 10), 'edge-1 listed as pending')
	or diag(explain($master->nodes));
my $e = $master->nodes->{'edge-1'};
ok(!defined $e->{granted_role} && $e->{announced_role} eq 'relay', 'no role granted; it asks for relay');
ok(wait_until(sub { my $l = announce_link('edge-1'); $l && $l->{awaiting_approval} }, 10),
	'mesh_status: awaiting approval') or diag(explain(status('edge-1')));
sleep 3;    # several announces, one log line
is(scalar(log_lines($node{'edge-1'}, qr/awaiting approval/)), 1, 'the node logs it once')
	or diag(join "\n", log_lines($node{'edge-1'}, qr/mesh:/));
my $m = HTTP::Tiny->new->get($master->url . '/admin/metrics', { headers => { Authorization => 'Bearer ' . $master->{admin} } });
like($m->{content}, qr/^mesh_master_nodes_pending 1$/m, 'master metrics: one pending');
ok(!table_file('edge-1')->{viewer_keys}, 'no viewer keys while waiting');
is(table_file('edge-1')->{version}, 0, 'no table from the master');
is(scalar(log_lines($node{'edge-1'}, qr/table version \d+ .*from master in force/)), 0, 'no table in force');
my $r = $master->node_call('GET', '/streams?node_id=edge-1&since=0&wait=0', 'edge-1');
is($r->{status}, 403, 'its table: 403');
is($r->{data}{error}, 'awaiting approval: no role granted to this node', 'awaiting approval') and ok($r->{sig_ok}, 'signed');

# --- the admin approves: it works ------------------------------------------------------------
my ($st) = $master->admin('PUT', '/admin/nodes/root-1/role', { role => 'root_relay' });
is($st, 200, 'root-1 granted root_relay before it starts');
node('root-1', 'root_relay');
($st) = $master->admin('PUT', '/admin/nodes/edge-1/role', { role => 'relay' });
is($st, 200, 'the admin grants edge-1 relay');
ok(wait_until(sub { log_lines($node{'edge-1'}, qr/approved by the master: role "relay" granted/) }, 10), 'the node says so');
ok(wait_until(sub { my $l = announce_link('edge-1'); $l && !$l->{awaiting_approval} }, 10), 'mesh_status: no longer awaiting');
ok(wait_until(sub { my $k = table_file('edge-1')->{viewer_keys}; $k && @$k }, 10), 'its table, with the viewer keys');
ok(wait_until(sub { 3 == grep { $_->{alive} && !$_->{pending} } values %{$master->nodes} }, 10), 'three nodes in the mesh');
my $pub = publish('rtmp://127.0.0.1:' . $node{'ingest-1'}->port(1) . "/live/cam1?key=$key", secs => 120);
ok(wait_until(sub { my $l = $master->live->{cam1}; $l && @{$l->{roots}} && @{$l->{edges}} }, 15), 'cam1 placed')
	or diag(explain($master->live));
ok(wait_until(sub { probe('rtmp://127.0.0.1:' . $node{'edge-1'}->port(1) . "/relay/cam1?token=$token", secs => 2, timeout => 10)->{video} > 0 }, 30),
	'the approved edge plays cam1');

# --- a node configured as a relay, granted ingest: no viewer keys -------------------------------
($st) = $master->admin('PUT', '/admin/nodes/sneak-1/role', { role => 'ingest' });
node('sneak-1', 'relay');
ok(wait_until(sub { my $t = table_file('sneak-1'); $t->{version} && ($t->{role} // '') eq 'ingest' }, 10),
	'sneak-1 (asking relay) takes a table as an ingest') or diag(explain(table_file('sneak-1')));
ok(!exists table_file('sneak-1')->{viewer_keys}, 'without the viewer keys');
is($master->nodes->{'sneak-1'}{role}, 'ingest', 'the master holds it an ingest');
my $s = status('sneak-1');
is($s && $s->{role}, 'ingest', 'its mesh_status says ingest');
$r = $master->node_call('POST', '/auth', 'sneak-1',
	{ node_id => 'sneak-1', action => 'play', stream => 'cam1', addr => '127.0.0.1', token => $token });
is($r->{data}{allow} ? 1 : 0, 0, 'and the master refuses it viewers') and is($r->{data}{reason}, 'wrong role', 'wrong role');

# --- an approved ingest re-announcing as root_relay keeps ingest -------------------------------
my %announce = (node_id => 'ingest-1', role => 'root_relay', rtmp_url => 'rtmp://127.0.0.1:' . $node{'ingest-1'}->port(1),
	http_url => '', version => 't', capabilities => { transcode => JSON::PP::false, hls => JSON::PP::false, dash => JSON::PP::false });
$r = $master->node_call('POST', '/announce', 'ingest-1', \%announce);
is($r->{status}, 200, 'ingest-1 announces as root_relay: answered') and ok($r->{sig_ok}, 'signed');
is($r->{data}{role}, 'ingest', 'the answer: still ingest');
$r = $master->node_call('POST', '/heartbeat', 'ingest-1', { node_id => 'ingest-1', role => 'root_relay', table_version => 0,
	uptime_s => 1, streams => [ { stream => 'cam1', source => 'broadcaster', viewers => 0, in_kbps => 1 } ], pushes => [],
	transcodes => [], load => { connections => 0, in_kbps => 0, out_kbps => 0 } });
is($r->{status}, 200, 'a heartbeat as root_relay: taken') and is($r->{data}{role}, 'ingest', 'as an ingest');
is($master->nodes->{'ingest-1'}{role}, 'ingest', 'ingest-1 is still an ingest at the master');
ok(!grep({ $_->{to} eq 'ingest-1' } @{$master->live->{cam1}{roots} // []}), 'and no root relay of cam1');
like($master->log, qr/heartbeat role ignored/, 'the master logs the claim ignored');
ok(probe('rtmp://127.0.0.1:' . $node{'edge-1'}->port(1) . "/relay/cam1?token=$token", secs => 2, timeout => 10)->{video} > 0,
	'cam1 still plays');

reap($pub);
unlike($master->log, qr/panic/, 'master: no panic');
done_testing();
