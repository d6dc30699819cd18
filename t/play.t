#!/usr/bin/perl

# Play admission: refused on ingest and root_relay; on a relay node, viewer tokens (valid,
# expired, forged, missing) when the table has a viewer_secret, open viewing when it has none.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap viewer_token);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

sub node {
	my ($name, $role, $table) = @_;
	my $t = Mesh::Test->new(name => $name);
	$t->write_file('table.json', $table);
	$t->write_node_conf(rtmp => qq{
	    mesh_node_id $name;
	    mesh_role $role;
	    mesh_table_file table.json;
	}, apps => qq{
	    application live { mesh on; live on; }
	    application relay { mesh on; live on; }
	});
	return $t->run;
}

my $secret = 'viewer-secret-91';
my $now = time;
my $good = viewer_token($secret, 'cam1', $now + 600);

# Viewers are refused on ingest and root_relay nodes, token or not.
for my $role ('ingest', 'root_relay') {
	my $t = node("n-$role", $role, qq({"viewer_secret": "$secret"}));
	my $url = 'rtmp://127.0.0.1:' . $t->port(1) . "/live/cam1?token=$good";
	my $got = probe($url, timeout => 8);
	ok(!$got->{ok} && $got->{video} == 0, "$role: play refused");
	ok(wait_until(sub { log_lines($t, qr/mesh: play refused: app "live", stream "cam1", from 127.0.0.1: wrong role/) }, 3),
		"$role: logged wrong role");
	$t->stop;
}

# A relay node with a viewer secret: the stream arrives as a push from root-1.
my $relay_table = qq({"version": 2, "viewer_secret": "$secret",
  "relay": {"cam1": [{"node_id": "edge-1", "node_url": "rtmp://127.0.0.1:1/relay", "node_key": "k-root1-edge1"}]}});
my $t = node('edge-1', 'relay', $relay_table);
my $base = 'rtmp://127.0.0.1:' . $t->port(1);
my $pub = publish("$base/relay/cam1?node=root-1&key=k-root1-edge1", secs => 40);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1" from root-1/) }, 5), 'relay: push from root-1 accepted');

# the viewer plays from the same application the push arrived in
my $got = probe("$base/relay/cam1?token=$good", secs => 2);
ok($got->{video} > 0 && $got->{audio} > 0, "relay: valid token plays ($got->{video} video, $got->{audio} audio)");

my @refused = (
	[ 'token=' . viewer_token($secret, 'cam1', $now - 5), 'expired token' ],
	[ 'token=' . viewer_token('guessed', 'cam1', $now + 600), 'bad token' ],
	[ 'token=' . viewer_token($secret, 'cam2', $now + 600), 'bad token' ],
	[ 'token=' . ($now + 600) . '.zz', 'bad token' ],
	[ '', 'no token' ],
);
for my $case (@refused) {
	my ($args, $why) = @$case;
	my $before = () = log_lines($t, qr/play refused.*: \Q$why\E/);
	my $r = probe("$base/relay/cam1?$args", timeout => 8);
	ok(!$r->{ok} && $r->{video} == 0, "relay: refused ($why)");
	ok(wait_until(sub { log_lines($t, qr/mesh: play refused: app "relay", stream "cam1", from 127.0.0.1: \Q$why\E/) > $before }, 3),
		"relay: logged $why");
}
unlike($t->error_log, qr/\Q$secret\E|[0-9a-f]{64}/, 'no secret or token in the error log');
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;

# No viewer_secret and no master: viewers are let in without a token.
$t = node('edge-2', 'relay', q({"relay": {"cam1": [{"node_id": "edge-2", "node_url": "rtmp://127.0.0.1:1/relay", "node_key": "k2"}]}}));
$base = 'rtmp://127.0.0.1:' . $t->port(1);
$pub = publish("$base/relay/cam1?node=root-1&key=k2", secs => 20);
wait_until(sub { log_lines($t, qr/publish accepted/) }, 5);
$got = probe("$base/relay/cam1", secs => 2);
ok($got->{video} > 0, 'relay without viewer_secret: open to viewers');
$got = probe("$base/relay/x.y", timeout => 8);
ok(!$got->{ok} && $got->{video} == 0, 'relay without viewer_secret: bad names still refused');
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;

done_testing();
