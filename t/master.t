#!/usr/bin/perl

# A node under a master (the fake master in t/lib): announce and heartbeat payloads and
# signatures, the table long poll driving a running push (target added, then removed), key
# revocation dropping a publisher, the last good table saved for a restart.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish probe wait_until log_lines reap free_port);
use Mesh::FakeMaster;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $master = Mesh::FakeMaster->new;
my $bkey = 'broadcaster-key-m1';

my $ingest = Mesh::Test->new(name => 'ingest-1');
my $edge = Mesh::Test->new(name => 'edge-1');
my ($pi, $pe) = ($ingest->port(1), $edge->port(1));
chmod 0777, $ingest->testdir;    # the worker (nobody) saves the table here

# The receiver runs from a file: a relay that takes cam1 with key k-push.
$edge->write_file('table.json', q({"version": 1, "role": "relay",
  "relay": {"cam1": [{"node_id": "edge-1", "node_url": "rtmp://127.0.0.1:1/relay", "node_key": "k-push-cam1"}]}}));
$edge->write_node_conf(rtmp => q{
    mesh_node_id edge-1;
    mesh_table_file table.json;
}, apps => q{application relay { mesh on; live on; }});

$ingest->write_file('master.key', $master->node_key('ingest-1') . "\n");
$ingest->write_file('table.json', '{"version": 0}');
my $murl = $master->url;
$ingest->write_node_conf(rtmp => qq{
    mesh_node_id ingest-1;
    mesh_role ingest;
    mesh_table_file table.json;
    mesh_master $murl;
    mesh_master_key_file master.key;
    mesh_rtmp_url rtmp://127.0.0.1:$pi;
    mesh_http_url http://127.0.0.1:8080;
    mesh_heartbeat_interval 1s;
    mesh_poll_wait 3s;
    mesh_master_timeout 2s;
});

my %table = (version => 1, role => 'ingest', publish => { cam1 => { key_sha256 => sha256_hex($bkey) } });
$master->set_table('ingest-1', {%table});
$edge->run;
$ingest->run;

# Announce: the protocol's payload, signed; then heartbeats at the interval.
ok(wait_until(sub { @{$master->requests('announce')} }, 10), 'announced');
my $a = $master->requests('announce')->[0];
ok($a->{sig_ok}, 'announce signature verifies');
is($a->{headers}{'x-mesh-node'}, 'ingest-1', 'X-Mesh-Node header');
is_deeply([ @{$a->{body}}{qw(node_id role rtmp_url http_url)} ], [ 'ingest-1', 'ingest', "rtmp://127.0.0.1:$pi", 'http://127.0.0.1:8080' ], 'announce payload');
ok(defined $a->{body}{version} && ref $a->{body}{capabilities} eq 'HASH', 'announce has version and capabilities');
is(scalar @{$master->requests('announce')}, 1, 'one announce');

ok(wait_until(sub { @{$master->requests('heartbeat')} >= 2 }, 10), 'heartbeats');
my $hb = $master->requests('heartbeat')->[-1];
ok($hb->{sig_ok}, 'heartbeat signature verifies');
for my $f (qw(node_id role table_version uptime_s streams pushes transcodes load)) {
	ok(exists $hb->{body}{$f}, "heartbeat has $f");
}

# The first table arrives by long poll, is in force, and is saved.
ok(wait_until(sub { log_lines($ingest, qr/mesh: table version 1 from master in force/) }, 10), 'table v1 in force');
my $polls = $master->requests('streams');
like($polls->[0]{path}, qr{^/streams\?node_id=ingest-1&since=0&wait=3$}, 'long poll query');
ok((grep { $_->{sig_ok} } @$polls) == @$polls, 'every poll signed');
ok(wait_until(sub { $ingest->read_file('table.json') =~ /"version":\s*1/ }, 5), 'table v1 saved to mesh_table_file');

# A broadcaster publishes; no push yet.
my $pub = publish("rtmp://127.0.0.1:$pi/live/cam1?key=$bkey", secs => 60);
ok(wait_until(sub { log_lines($ingest, qr/publish accepted: stream "cam1" from broadcaster/) }, 5), 'broadcaster admitted');

# Table v2 adds a target: the running publish starts pushing to it.
$master->set_table('ingest-1', { %table, version => 2,
	ingest => { cam1 => [ { node_id => 'edge-1', node_url => "rtmp://127.0.0.1:$pe/relay", node_key => 'k-push-cam1' } ] } });
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from ingest-1/) }, 10), 'v2: push started into the running publish');
my $got = probe("rtmp://127.0.0.1:$pe/relay/cam1", secs => 2);
ok($got->{video} > 0, "v2: the stream plays at the target ($got->{video} video)");

# The heartbeat reports the stream and the push.
ok(wait_until(sub {
	my $b = $master->requests('heartbeat')->[-1]{body};
	(grep { $_->{stream} eq 'cam1' && $_->{source} eq 'broadcaster' } @{$b->{streams}})
		&& (grep { $_->{to} eq 'edge-1' && $_->{state} eq 'connected' } @{$b->{pushes}}) && $b->{table_version} == 2;
}, 10), 'heartbeat reports the stream, its push and table version 2');

# Table v3 removes the target: the push stops, the publisher stays.
$master->set_table('ingest-1', { %table, version => 3 });
ok(wait_until(sub { log_lines($ingest, qr/push of stream "cam1" to node "edge-1" stopped: no longer in the table/) }, 10), 'v3: push stopped');
ok(wait_until(sub { !probe("rtmp://127.0.0.1:$pe/relay/cam1", timeout => 4)->{video} }, 10), 'v3: the target no longer has the stream');
ok(!defined reap($pub, 0), 'v3: publisher undisturbed');

# Table v4 revokes the key: the publisher is dropped.
$master->set_table('ingest-1', { version => 4, role => 'ingest' });
ok(wait_until(sub { log_lines($ingest, qr/mesh: publish dropped: app "live", stream "cam1", from 127.0.0.1: unknown stream \(table version 4\)/) }, 10),
	'v4: revoked key drops the publisher');
ok(defined reap($pub, 10), 'v4: the publisher was disconnected');
ok(wait_until(sub { $ingest->read_file('table.json') =~ /"version":\s*4/ }, 5), 'v4 saved');

unlike($ingest->error_log, qr/\Q$bkey\E|k-push-cam1|test-master-key/, 'no key or master key in the log');

$ingest->stop;
$edge->stop;
$master->stop;
done_testing();
