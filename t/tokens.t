#!/usr/bin/perl

# Viewer tokens that can be rotated, revoked and bounded (docs/protocol.md, "Viewer tokens"),
# with the real master and real nodes: a token from the admin API plays at the edge; after a
# rotation the old token plays during the grace and is refused after it, while a new one plays;
# deleting and re-creating a stream refuses the old stream's tokens; the token endpoint refuses
# missing streams and lifetimes past the maximum. Then a standalone node whose table file has a
# key list verifies tokens alone. Secrets: the master's database is 0600 with its -wal and -shm,
# its command line holds no secret, and no secret reaches any log.

use strict;
use warnings;
use Test::More;
use Digest::SHA qw(hmac_sha256_hex);
use File::Basename qw(dirname);
use JSON::PP;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish probe wait_until log_lines reap spawn);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();

my $dist = dirname($Mesh::Test::BINARY);
my $tool = "$dist/mesh-tool";

# A v2 token made here (the protocol's text, not mesh-core's code).
sub token_v2 {
	my ($secret, $kid, $stream, $id, $expiry) = @_;
	return "v2.$kid.$expiry." . hmac_sha256_hex("v2\n$kid\n$stream\n$id\n$expiry", $secret);
}

my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 3 --max-poll-wait 3 --max-token-ttl 600)]);
my %node;
for ([ 'ingest-1', 'ingest', 'live' ], [ 'root-1', 'root_relay', 'relay' ], [ 'edge-1', 'relay', 'relay' ]) {
	my ($id, $role, $app) = @$_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;', apps => "application $app { mesh on; live on; }");
	$t->run;
	$node{$id} = $t;
}
ok(wait_until(sub { 3 == grep { $_->{alive} } values %{$master->nodes} }, 10), 'three nodes announced');
sub rtmp { 'rtmp://127.0.0.1:' . $node{$_[0]}->port(1) . ($_[0] eq 'ingest-1' ? '/live' : '/relay') }
sub plays { probe(rtmp('edge-1') . "/cam1?token=$_[0]", secs => 2, timeout => 20)->{video} > 0 }
sub refused { probe(rtmp('edge-1') . "/cam1?token=$_[0]", secs => 1, timeout => 10)->{video} == 0 }

my $key = $master->stream_key('cam1');
sub go_live {
	my ($key) = @_;
	my $pub = publish(rtmp('ingest-1') . "/cam1?key=$key", secs => 300);
	ok(wait_until(sub { my $l = $master->live->{cam1}; $l && @{$l->{edges}} }, 15), 'cam1 placed on edge-1')
		or diag(explain($master->live));
	return $pub;
}
my $pub = go_live($key);

# The token endpoint: streams that exist, lifetimes up to --max-token-ttl.
my ($st, $d) = $master->admin('POST', '/admin/tokens', { stream => 'cam9' });
is($st, 404, 'no token for a stream that does not exist');
($st, $d) = $master->admin('POST', '/admin/tokens', { stream => 'cam1', ttl_s => 601 });
is($st, 400, 'no token past the maximum lifetime');
like($d->{error} // '', qr/ttl_s: 1 to 600 seconds/, 'and it says the bound');
($st) = $master->admin('POST', '/admin/tokens', { stream => 'cam1', ttl_s => 18446744073709551615 });
is($st, 400, 'a lifetime that would wrap the clock: refused');

my $old = $master->viewer_token('cam1', 600);
like($old, qr/^v2\.k1\.\d+\.[0-9a-f]{64}$/, 'a v2 token from the admin API');
ok(wait_until(sub { plays($old) }, 20), 'a valid token plays at the edge');
ok(refused('v2.k1.' . (time + 60) . '.' . ('0' x 64)), 'a forged token does not');

# The edge holds the keys, the maximum and the stream's identity, in its own table.
my $edge_table = sub { decode_json($node{'edge-1'}->read_file('table.json') || '{}') };
ok(wait_until(sub { my $t = $edge_table->(); $t->{viewer_keys} && $t->{streams}{cam1} }, 10), 'the edge has viewer keys and identities');
my $t = $edge_table->();
is($t->{max_token_ttl_s}, 600, 'and the maximum lifetime');
ok(!exists $t->{viewer_secret}, 'and no legacy secret');
my %secrets = map { ($_->{id} => $_->{secret}) } @{$t->{viewer_keys}};
my $far = token_v2($secrets{k1}, 'k1', 'cam1', $t->{streams}{cam1}{id}, time + 600 + 400);
ok(refused($far), 'a token made elsewhere to live past the maximum: refused');

# Rotation with a grace of 8 s: old and new tokens play, then only the new one.
($st, $d) = $master->admin('POST', '/admin/viewer-keys', { grace_s => 8 });
is($st, 201, 'viewer key rotated');
is($d->{id}, 'k2', 'a new signing key');
my $end = $d->{retiring}[0]{not_after};
ok(wait_until(sub { my $t = $edge_table->(); (grep { $_->{id} eq 'k2' } @{$t->{viewer_keys} // []}) }, 10), 'the edge has the new key');
my $new = $master->viewer_token('cam1', 600);
like($new, qr/^v2\.k2\./, 'new tokens are signed with it');
ok(plays($old), 'during the grace: the old token still plays');
ok(plays($new), 'and the new one plays');
my $keys = $master->admin('GET', '/admin/viewer-keys');
ok(!grep({ exists $_->{secret} } @{$keys->{keys}}), 'the key list shows no secret');
sleep 1 while time <= $end + 1;
# Refused by the edge itself: as a retired key ("expired token"), or, once the master has
# dropped the key from the tables (a second after its grace), an unknown one ("bad token").
my $refusal = qr/play refused: app "relay", stream "cam1", .*: (expired|bad) token/;
my $before = () = log_lines($node{'edge-1'}, $refusal);
ok(refused($old), 'after the grace: the old token is refused');
ok(wait_until(sub { log_lines($node{'edge-1'}, $refusal) > $before }, 5), 'by the edge itself');
ok(plays($new), 'the new token still plays');
ok(wait_until(sub { my $t = $edge_table->(); !grep { $_->{id} eq 'k1' } @{$t->{viewer_keys} // []} }, 10),
	'the retired key leaves the tables');

# Deleted and created again (for another account): the old stream's tokens are refused.
my $first_id = $edge_table->()->{streams}{cam1}{id};
is(($master->admin('DELETE', '/admin/streams/cam1'))[0], 204, 'stream deleted');
kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { !$master->live->{cam1} }, 10), 'cam1 gone');
my $key2 = $master->stream_key('cam1', 'other');
$pub = go_live($key2);
ok(wait_until(sub { my $id = $edge_table->()->{streams}{cam1}{id}; $id && $id ne $first_id }, 10),
	'the edge has the new stream\'s identity');
ok(refused($new), 'a re-created stream refuses the old stream\'s token');
my $fresh = $master->viewer_token('cam1', 600);
ok(wait_until(sub { plays($fresh) }, 20), 'and plays with its own');

# The master's secrets: its database files 0600, no secret on its command line or in a log.
my $db = "$master->{dir}/master.db";
for my $f ($db, "$db-wal", "$db-shm") {
	ok(-e $f, "$f exists");
	is(sprintf('%04o', (stat $f)[2] & 07777), '0600', "$f is 0600");
}
my $cmdline = do { local $/; open my $fh, '<', "/proc/$master->{pid}/cmdline" or die; <$fh> };
unlike($cmdline, qr/\Q$master->{key}\E|\Q$master->{admin}\E/, 'no secret on the master\'s command line');
$t = $edge_table->();
my @secret = ($master->{key}, $master->{admin}, $key, $key2, map { $_->{secret} } @{$t->{viewer_keys}});
push @secret, values %secrets;
for my $who ([ 'master', $master->log ], map { [ $_, $node{$_}->error_log ] } sort keys %node) {
	my ($name, $log) = @$who;
	my @leaks = grep { index($log, $_) >= 0 } @secret, $old, $new, $fresh;
	is(scalar @leaks, 0, "$name: no key, secret or token in its log (debug level for the master)");
}

kill 'TERM', $pub;
reap($pub, 5);
$_->stop for map { $node{$_} } sort keys %node;
$master->stop;

# A standalone node, no master: its table file's key list verifies tokens locally.
my $s = Mesh::Test->new(name => 'standalone');
my $bkey = 'standalone-broadcaster-key';
my ($k_new, $k_old) = ('standalone-new-key-0123456789', 'standalone-old-key-0123456789');
my $retired_at = time - 10;
$s->write_file('table.json', encode_json({ role => 'standalone', max_token_ttl_s => 3600,
	publish => { cam1 => { key_sha256 => sha256_hex($bkey) } }, streams => { cam1 => { id => 'gen-7' } },
	viewer_keys => [ { id => 'k2', secret => $k_new }, { id => 'k1', secret => $k_old, not_after => $retired_at } ] }));
$s->write_node_conf(rtmp => 'mesh_table_file table.json; mesh_role standalone;');
$s->run;
my $url = 'rtmp://127.0.0.1:' . $s->port(1) . '/live/cam1';
my $spub = publish("$url?key=$bkey", secs => 120);
my $made = `$tool token \@$s->{dir}/table.json cam1 600`;
chomp $made;
like($made, qr/^v2\.k2\.\d+\.[0-9a-f]{64}$/, 'mesh-tool makes a token from the table');
ok(wait_until(sub { probe("$url?token=$made", secs => 2, timeout => 20)->{video} > 0 }, 20), 'standalone: the token plays');
my $now = time;
my @bad = (
	[ token_v2($k_new, 'k2', 'cam1', 'gen-6', $now + 600), 'bad token', 'a token of an earlier stream of that name' ],
	[ token_v2($k_old, 'k1', 'cam1', 'gen-7', $now + 600), 'expired token', 'a token of a retired key' ],
	[ token_v2($k_new, 'k2', 'cam1', 'gen-7', $now + 3600 + 400), 'bad token', 'a token past the maximum lifetime' ],
	[ token_v2($k_new, 'k2', 'cam1', 'gen-7', $now - 1), 'expired token', 'an expired token' ],
	[ "$now." . hmac_sha256_hex("cam1\n$now", $k_new), 'bad token', 'a legacy token (no viewer_secret here)' ],
);
for my $b (@bad) {
	my ($tok, $why, $what) = @$b;
	my $before = () = log_lines($s, qr/play refused: app "live", stream "cam1", .*: \Q$why\E/);
	is(probe("$url?token=$tok", secs => 1, timeout => 10)->{video}, 0, "standalone: $what is refused");
	ok(wait_until(sub { log_lines($s, qr/play refused: app "live", stream "cam1", .*: \Q$why\E/) > $before }, 3),
		"standalone: $what: logged as $why");
}
my $out = `$tool token \@$s->{dir}/table.json cam1 3601 2>&1`;
isnt($?, 0, 'mesh-tool refuses a lifetime past the table\'s maximum');
like($out, qr/token lifetime too long: at most 3600 s/, 'and says the bound');
$out = `$tool token $k_new cam1 2>&1`;
is($? >> 8, 2, 'mesh-tool refuses a secret on its command line');

# A playing viewer is held to what a table change takes away: its key retired, it is dropped.
my $viewer = spawn('timeout', 60, 'ffmpeg', '-v', 'error', '-i', "$url?token=$made", '-f', 'null', '-');
sleep 3;
ok(!defined reap($viewer, 0.1), 'standalone: a viewer plays with a k2 token');
my $k_next = 'standalone-next-key-0123456789';
$s->write_file('table.json', encode_json({ version => 2, role => 'standalone', max_token_ttl_s => 3600,
	publish => { cam1 => { key_sha256 => sha256_hex($bkey) } }, streams => { cam1 => { id => 'gen-7' } },
	viewer_keys => [ { id => 'k3', secret => $k_next }, { id => 'k2', secret => $k_new, not_after => time - 1 } ] }));
ok(wait_until(sub { log_lines($s, qr/play dropped: app "live", stream "cam1", .*: expired token \(table version 2\)/) }, 10),
	'standalone: its key retired by a new table, the playing viewer is dropped');
ok(defined reap($viewer, 10), 'standalone: and its player ends');
ok(wait_until(sub { !defined reap($spub, 0) }, 1), 'standalone: the publisher stays');
unlike($s->error_log, qr/\Q$k_new\E|\Q$k_old\E|\Q$made\E/, 'standalone: no secret or token in the log');
kill 'TERM', $spub;
reap($spub, 5);
$s->stop;
done_testing();
