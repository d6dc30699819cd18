#!/usr/bin/perl

# A three-node chain on loopback, one nginx and one table file each:
# ingest-1 → root-1 → edge-1. A stream published at the ingest with ffmpeg plays at the edge;
# a push with a wrong key is refused by its receiver; a push to a target that is down does not
# disturb the publisher, and a target that comes back gets the stream again.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status probe wait_until log_lines reap viewer_token free_port);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $ingest = Mesh::Test->new(name => 'ingest-1');
my $root = Mesh::Test->new(name => 'root-1');
my $edge = Mesh::Test->new(name => 'edge-1');
my ($pi, $pr, $pe) = map { $_->port(1) } $ingest, $root, $edge;
my $down = free_port();    # nothing listens here

my $bkey = 'broadcaster-key-1';
my $secret = 'edge-viewer-secret';
# the ingest reaches root-1 by name: hosts are resolved when the table is loaded
my $to_root = qq({"node_id": "root-1", "node_url": "rtmp://localhost:$pr/relay", "node_key": "k-ingest1-root1-cam1"});
my $to_nowhere = qq({"node_id": "root-3", "node_url": "rtmp://no-such-host.invalid/relay", "node_key": "k-ingest1-root3-cam1"});
my $to_down = qq({"node_id": "root-2", "node_url": "rtmp://127.0.0.1:$down/relay", "node_key": "k-ingest1-root2-cam1"});
my $to_edge = qq({"node_id": "edge-1", "node_url": "rtmp://127.0.0.1:$pe/relay", "node_key": "k-root1-edge1-cam1"});

my %tables = (
	'ingest-1' => qq({"version": 1, "role": "ingest", "publish": {"cam1": {"key_sha256": "@{[sha256_hex($bkey)]}"}},
		"ingest": {"cam1": [$to_root, $to_down, $to_nowhere]}}),
	'root-1' => qq({"version": 1, "role": "root_relay", "ingest": {"cam1": [$to_root]}, "relay": {"cam1": [$to_edge]}}),
	'edge-1' => qq({"version": 1, "role": "relay", "viewer_secret": "$secret", "relay": {"cam1": [$to_edge]}}),
);

for my $t ($ingest, $root, $edge) {
	my $id = $t->name;
	$t->write_file('table.json', $tables{$id});
	$t->write_node_conf(rtmp => qq{
	    mesh_node_id $id;
	    mesh_table_file table.json;
	}, apps => qq{
	    application live { mesh on; live on; }
	    application relay { mesh on; live on; }
	});
}
$_->run for $edge, $root, $ingest;

my $token = viewer_token($secret, 'cam1', time + 600);
my $pub = publish("rtmp://127.0.0.1:$pi/live/cam1?key=$bkey", secs => 90);

ok(wait_until(sub { log_lines($root, qr/publish accepted: stream "cam1" from ingest-1/) }, 10), 'root-1 accepted the push from ingest-1');
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) }, 10), 'edge-1 accepted the push from root-1');

my $got = probe("rtmp://127.0.0.1:$pe/relay/cam1?token=$token", secs => 3);
ok($got->{video} > 10 && $got->{audio} > 10, "stream published at ingest plays at the edge ($got->{video} video, $got->{audio} audio packets)");

# A target whose host did not resolve at load time is skipped, with a line saying so.
ok(wait_until(sub { log_lines($ingest, qr/push of stream "cam1" to node "root-3" skipped: its host did not resolve/) }, 5),
	'unresolved target: skipped and logged');

# The target that is down is retried, logged once, and the publisher is not disturbed.
ok(wait_until(sub { log_lines($ingest, qr/push of stream "cam1" to node "root-2" is down, retrying/) }, 10), 'down target: logged');
sleep 7;
is(scalar(() = log_lines($ingest, qr/to node "root-2" is down/)), 1, 'down target: logged once, not per retry');
ok(!defined reap($pub, 0), 'publisher still running');
$got = probe("rtmp://127.0.0.1:$pe/relay/cam1?token=$token", secs => 2);
ok($got->{video} > 0, 'edge still plays while a target is down');

# A second publisher of the same stream is turned away by the live module, and pushes nothing.
my $pushes = () = log_lines($root, qr/publish accepted: stream "cam1" from ingest-1/);
publish_status("rtmp://127.0.0.1:$pi/live/cam1?key=$bkey", secs => 3);
ok(wait_until(sub { log_lines($ingest, qr/already publishing/) }, 3), 'second publisher: already publishing');
is(scalar(() = log_lines($root, qr/publish accepted: stream "cam1" from ingest-1/)), $pushes, 'second publisher: no second push');
ok(!defined reap($pub, 0), 'first publisher undisturbed');

# A push with a wrong key (or from a node the table does not name for it) is refused.
isnt(publish_status("rtmp://127.0.0.1:$pr/relay/cam1?node=ingest-1&key=k-guess"), 0, 'push with a wrong key refused');
ok(wait_until(sub { log_lines($root, qr/publish refused: app "relay", stream "cam1", from 127.0.0.1: wrong key/) }, 3), 'root-1 logged the wrong key');
isnt(publish_status("rtmp://127.0.0.1:$pe/relay/cam1?node=root-1&key=k-ingest1-root1-cam1"), 0, 'another hop\'s key refused');
isnt(publish_status("rtmp://127.0.0.1:$pr/relay/cam2?node=ingest-1&key=k-ingest1-root1-cam1"), 0, 'key for another stream refused');

# Viewers are refused on the ingest and root relay of the chain.
for my $t ($ingest, $root) {
	my $r = probe('rtmp://127.0.0.1:' . $t->port(1) . "/relay/cam1?token=$token", timeout => 8);
	ok(!$r->{ok} && $r->{video} == 0, $t->name . ': viewer refused');
}

# The root relay goes away and comes back: the ingest's push starts again by itself.
$root->stop(fast => 1);
ok(wait_until(sub { log_lines($ingest, qr/push of stream "cam1" to node "root-1" is down, retrying/) }, 10), 'root-1 down: logged at the ingest');
$root->run;
ok(wait_until(sub { log_lines($ingest, qr/push of stream "cam1" to node "root-1" is connected again/) }, 15), 'root-1 back: push started again');
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) >= 2 }, 10), 'edge-1 gets the stream again');
$got = probe("rtmp://127.0.0.1:$pe/relay/cam1?token=$token", secs => 2);
ok($got->{video} > 0, 'edge plays again');
ok(!defined reap($pub, 0), 'publisher undisturbed throughout');

unlike($_->error_log, qr/\Q$bkey\E|k-ingest1-root1-cam1|k-root1-edge1-cam1/, $_->name . ': no key in the error log')
	for $ingest, $root, $edge;

kill 'TERM', $pub;
reap($pub, 5);
$_->stop for $ingest, $root, $edge;

done_testing();
