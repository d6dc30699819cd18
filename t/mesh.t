#!/usr/bin/perl

# A whole mesh with the reference master: ingest → root relay → edges, placed by the master.
# Publish with a key from the admin API, play at the edge the stream was placed on (RTMP and
# HLS), a viewer at the other edge routes it there; an edge and then a root relay die and the
# stream finds its way around them; a restarted master gets its nodes back; wrong keys and
# admin calls without the token are refused.

use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(publish publish_status probe wait_until log_lines reap);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3)]);

# The admin API wants its token.
is(($master->admin('GET', '/admin/nodes', undef, no_token => 1))[0], 401, 'admin API: no token, 401');
is(($master->admin('POST', '/admin/accounts', { name => 'x' }, token => 'wrong'))[0], 401, 'admin API: wrong token, 401');
my $key = $master->stream_key('cam1');
like($key, qr/^[0-9a-f]{48}$/, 'a stream key from the admin API');
my $token = $master->viewer_token('cam1');

my %node;
sub node {
	my ($id, $role) = @_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }',
		($role eq 'relay' ? (hls => { mesh_rendition => 'source' }) : ()));
	# a node stopped fast kills its ffmpeg, and nginx reports the signal
	$t->allow_alert(qr/unknown process \d+ exited on signal 9/);
	$t->run;
	$node{$id} = $t;
	return $t;
}
node('ingest-1', 'ingest');
node('root-1', 'root_relay');
node('root-2', 'root_relay');
node('edge-1', 'relay');
node('edge-2', 'relay');
ok(wait_until(sub { my $n = $master->nodes; 5 == grep { $_->{alive} } values %$n }, 10), 'five nodes announced and alive');

sub rtmp { 'rtmp://127.0.0.1:' . $node{$_[0]}->port(1) . ($_[0] eq 'ingest-1' ? '/live' : '/relay') }
sub http { 'http://127.0.0.1:' . $node{$_[0]}->port(2) }
my $ua = HTTP::Tiny->new(timeout => 30);

# Broadcasters: a wrong key is refused (the ingest asks the master, which says no).
isnt(publish_status(rtmp('ingest-1') . '/cam1?key=wrong'), 0, 'wrong broadcaster key: refused');
ok(log_lines($node{'ingest-1'}, qr/auth endpoint denied|wrong key/), 'refusal logged at the ingest');

my $pub = publish(rtmp('ingest-1') . "/cam1?key=$key", secs => 300);
my $live;
ok(wait_until(sub { $live = $master->live->{cam1}; $live && @{$live->{roots}} && @{$live->{edges}} }, 10), 'placed by the master')
	or diag(explain($master->live));
my $root = $live->{roots}[0]{to};
my $edge = $live->{edges}[0]{to};
my ($other) = grep { $_ ne $edge } qw(edge-1 edge-2);
my ($other_root) = grep { $_ ne $root } qw(root-1 root-2);
note("cam1: ingest-1 → $root → $edge");

my $p = probe(rtmp($edge) . "/cam1?token=$token", secs => 2, timeout => 20);
ok($p->{video} > 0 && $p->{audio} > 0, "RTMP plays at $edge ($p->{video} video, $p->{audio} audio packets)");
is(probe(rtmp($edge) . '/cam1', secs => 1, timeout => 10)->{video}, 0, 'no token: nothing to play');
is($ua->get(http($edge) . "/hls/cam1/master.m3u8?token=$token")->{status}, 200, "HLS at $edge");

# A viewer at the other edge: the edge asks the master to route the stream there.
my $r = $ua->get(http($other) . "/hls/cam1/master.m3u8?token=$token");
is($r->{status}, 200, "HLS at $other after a route request") or diag($r->{content});
like($master->log, qr/route request node=$other stream=cam1 status=Routed/, 'routed through the master');
ok((grep { $_->{to} eq $other && $_->{by_route} } @{$master->live->{cam1}{edges}}), "$other is on the stream by route");

# An edge dies: the stream stays on the other one, where the next request plays.
$node{$edge}->stop(fast => 1);
ok(wait_until(sub { !$master->nodes->{$edge}{alive} }, 10), "$edge dead at the master");
ok(wait_until(sub { my $l = $master->live->{cam1}; $l && !grep { $_->{to} eq $edge } @{$l->{edges}} }, 5), "$edge off the stream");
$p = probe(rtmp($other) . "/cam1?token=$token", secs => 2, timeout => 20);
ok($p->{video} > 0, "the next viewer plays at $other");

# The root relay dies: the stream goes through the other one (new hop keys) within a heartbeat
# timeout.
$node{$root}->stop(fast => 1);
ok(wait_until(sub { my $l = $master->live->{cam1}; $l && $l->{roots}[0] && $l->{roots}[0]{to} eq $other_root }, 10),
	"re-routed through $other_root") or diag(explain($master->live));
ok(wait_until(sub { log_lines($node{$other_root}, qr/publish accepted: stream "cam1" from ingest-1/) }, 10),
	"$other_root takes the push from ingest-1");
ok(wait_until(sub { probe(rtmp($other) . "/cam1?token=$token", secs => 2, timeout => 10)->{video} > 0 }, 20),
	"$other plays through $other_root");

# The master's own figures.
my $m = HTTP::Tiny->new->get($master->url . '/admin/metrics', { headers => { Authorization => 'Bearer ' . $master->{admin} } });
like($m->{content}, qr/^mesh_master_routes_total\{status="routed"\} [1-9]/m, 'metrics: routes counted');
like($m->{content}, qr/^mesh_master_node_deaths_total 2$/m, 'metrics: the two deaths');
like($m->{content}, qr/^mesh_master_nodes\{role="relay",alive="false"\} 1$/m, 'metrics: a dead edge');

# The master restarts on its database: nodes announce again, the mesh carries on.
$master->stop;
$master->start;
ok(wait_until(sub { my $n = $master->nodes; 3 == grep { $_->{alive} } values %$n }, 15), 'after a master restart: the three live nodes are back');
ok(wait_until(sub { my $l = $master->live->{cam1}; $l && @{$l->{edges}} }, 15), 'and cam1 is placed again');
ok(wait_until(sub { probe(rtmp($other) . "/cam1?token=$token", secs => 2, timeout => 10)->{video} > 0 }, 30),
	"$other plays after the restart");
isnt(publish_status(rtmp('ingest-1') . '/cam2?key=' . $key), 0, 'a key for another stream: refused');

# An admin turns the edge into a root relay: it stops serving viewers; back to relay, it plays.
my ($st) = $master->admin('PUT', "/admin/nodes/$other/role", { role => 'root_relay' });
is($st, 200, 'admin: role assigned');
ok(wait_until(sub { probe(rtmp($other) . "/cam1?token=$token", secs => 1, timeout => 5)->{video} == 0
	&& log_lines($node{$other}, qr/play refused: app "relay", stream "cam1", .*: wrong role/) }, 15),
	"$other as root_relay: viewers refused for the wrong role");
is($master->nodes->{$other}{role}, 'root_relay', 'the master says so');
# (roles are granted, not claimed: the node now asks for root_relay, and only an admin's grant
# makes it a relay again)
$master->admin('PUT', "/admin/nodes/$other/role", { role => 'relay' });
ok(wait_until(sub { probe(rtmp($other) . "/cam1?token=$token", secs => 2, timeout => 10)->{video} > 0 }, 30),
	"$other granted relay again: plays again");

kill 'TERM', $pub;
reap($pub, 5);
$_->stop for map { $node{$_} } sort keys %node;
$master->stop;
unlike($master->log, qr/panic/, 'master: no panic');
done_testing();
