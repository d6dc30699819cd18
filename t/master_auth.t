#!/usr/bin/perl

# The auth and route endpoints, asked without blocking: a publish with a key the table does
# not know waits for the answer (allow, deny, timeout, client gone), answers are cached; a
# viewer asking a relay for a stream it lacks triggers one route request per stream, and plays
# once the stream is pushed in; a role change drops viewers and pushes the new role refuses.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status probe wait_until log_lines reap spawn);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $master = Mesh::FakeMaster->new;

# --- auth at an ingest node ---------------------------------------------------------------
$master->set_table('ingest-1', { version => 1, role => 'ingest' });
my $ingest = Mesh::Node->under_master(id => 'ingest-1', master => $master);
$ingest->run;
ok(wait_until(sub { log_lines($ingest, qr/table version 1 from master in force/) }, 10), 'ingest: table in force');
my $base = 'rtmp://127.0.0.1:' . $ingest->port(1) . '/live';

$master->set_auth('cam2', allow => JSON::PP::true, ttl_s => 60, credential => 'good-key', delay => 1);
my $t0 = time;
my $pub = publish("$base/cam2?key=good-key", secs => 30);
ok(wait_until(sub { log_lines($ingest, qr/publish accepted: stream "cam2" from broadcaster/) }, 10), 'auth allow: admitted after the answer');
cmp_ok(time - $t0, '>=', 0.9, 'auth allow: the publish waited for the answer');
my $asked = $master->requests('auth');
is(scalar @$asked, 1, 'auth asked once');
is_deeply([ @{$asked->[0]{body}}{qw(node_id action stream key addr)} ], [ 'ingest-1', 'publish', 'cam2', 'good-key', '127.0.0.1' ], 'auth request payload');
ok($asked->[0]{sig_ok}, 'auth request signed');
ok(!defined reap($pub, 1), 'auth allow: publisher running');
kill 'TERM', $pub;
reap($pub, 5);

# The answer is cached: the same key publishes again without asking.
$pub = publish("$base/cam2?key=good-key", secs => 3);
ok(wait_until(sub { log_lines($ingest, qr/publish accepted: stream "cam2"/) >= 2 }, 10), 'cached allow: admitted again');
is(scalar @{$master->requests('auth')}, 1, 'cached allow: not asked again');
reap($pub, 10);

isnt(publish_status("$base/cam2?key=bad-key"), 0, 'auth deny: refused');
ok(wait_until(sub { log_lines($ingest, qr/mesh: publish refused: app "live", stream "cam2", from 127.0.0.1: auth: wrong credential/) }, 5),
	'auth deny: logged with the master\'s reason');

# While the auth endpoint stalls, a key the table knows is admitted at once, and an unknown
# one is refused when the call times out.
$master->set_table('ingest-1', { version => 2, role => 'ingest', publish => { cam4 => { key_sha256 => sha256_hex('k4') } } });
ok(wait_until(sub { log_lines($ingest, qr/table version 2 from master in force/) }, 10), 'table v2 in force');
$master->fault('auth', 'stall', 10);
my $slow = publish("$base/cam3?key=k3", secs => 4);
sleep 0.3;
$t0 = time;
$pub = publish("$base/cam4?key=k4", secs => 3);
ok(wait_until(sub { log_lines($ingest, qr/publish accepted: stream "cam4"/) }, 5), 'stalled auth: a known key is admitted');
cmp_ok(time - $t0, '<', 1.5, 'stalled auth: ... at once');
isnt(reap($slow, 10), 0, 'auth timeout: refused');
ok(wait_until(sub { log_lines($ingest, qr/publish refused: .* stream "cam3", .*: auth endpoint failed: timed out/) }, 8), 'auth timeout: logged');
reap($pub, 10);
$master->fault('auth', 'ok');

# Client gone: the publisher leaves while the endpoint thinks; the late answer is dropped.
$master->set_auth('cam5', allow => JSON::PP::true, ttl_s => 60, delay => 3);
my $before = () = log_lines($ingest, qr/publish accepted/);
my $gone = publish("$base/cam5?key=whatever", secs => 30);
ok(wait_until(sub { grep { $_->{body}{stream} eq 'cam5' } @{$master->requests('auth')} }, 5), 'client gone: asked');
kill 'KILL', $gone;
reap($gone, 5);
sleep 4;
is(scalar(() = log_lines($ingest, qr/publish accepted/)), $before, 'client gone: the late answer admitted nobody');
# the node is still healthy
$pub = publish("$base/cam4?key=k4", secs => 3);
ok(wait_until(sub { log_lines($ingest, qr/publish accepted: stream "cam4"/) >= 2 }, 5), 'after a client left: the node serves on');
reap($pub, 10);
$ingest->stop;

# --- route at a relay node ------------------------------------------------------------------
$master->set_table('edge-1', { version => 1, role => 'relay' });
my $edge = Mesh::Node->under_master(id => 'edge-1', master => $master, apps => 'application relay { mesh on; live on; }');
$edge->run;
ok(wait_until(sub { log_lines($edge, qr/table version 1 from master in force/) }, 10), 'edge: table in force');
my $ebase = 'rtmp://127.0.0.1:' . $edge->port(1) . '/relay';

# No viewer_secret: viewers are asked about; three viewers want cam7, which is not here.
$master->set_auth('cam7', allow => JSON::PP::true, ttl_s => 60);
$master->set_route('cam7', status => 'routed', tables => { 'edge-1' => { version => 2, role => 'relay',
	relay => { cam7 => [ { node_id => 'edge-1', node_url => 'rtmp://127.0.0.1:1/relay', node_key => 'k-root1-edge1-cam7' } ] } } });
my @viewers = map { spawn('ffprobe', '-v', 'error', '-rw_timeout', '20000000', '-read_intervals', '%+2',
	'-show_entries', 'packet=codec_type', '-of', 'csv=p=0', "$ebase/cam7") } 1 .. 3;
ok(wait_until(sub { @{$master->requests('route')} >= 1 }, 10), 'route asked');
sleep 1.5;
my $routes = $master->requests('route');
is(scalar @$routes, 1, 'one route request for three viewers');
is_deeply($routes->[0]{body}, { node_id => 'edge-1', stream => 'cam7' }, 'route payload');
ok($routes->[0]{sig_ok}, 'route request signed');
ok(wait_until(sub { log_lines($edge, qr/route for stream "cam7": routed/) }, 5), 'route answer logged');
ok(wait_until(sub { log_lines($edge, qr/table version 2 from master in force/) }, 10), 'the routed table arrives');

# root-1 pushes the stream in (played here by ffmpeg); the waiting viewers get it.
my $root = publish("$ebase/cam7?node=root-1&key=k-root1-edge1-cam7", secs => 40);
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam7" from root-1/) }, 10), 'push from root-1 admitted');
is(scalar(grep { (reap($_, 15) // -1) == 0 } @viewers), 3, 'the waiting viewers played (ffprobe read the stream and exited 0)');
my $got = probe("$ebase/cam7", secs => 2);
ok($got->{video} > 0, "a new viewer plays at once ($got->{video} video)");
is(scalar @{$master->requests('route')}, 1, 'no route request while the stream is here');

# Role change to root_relay: viewers go, and so does the push the new role refuses.
my $viewer = spawn('ffprobe', '-v', 'error', '-rw_timeout', '30000000', '-read_intervals', '%+30',
	'-show_entries', 'packet=codec_type', '-of', 'csv=p=0', "$ebase/cam7");
sleep 2;
$master->set_role('edge-1', 'root_relay');
ok(wait_until(sub { log_lines($edge, qr/master sets role "root_relay"/) }, 10), 'role change applied');
ok(wait_until(sub { log_lines($edge, qr/mesh: play dropped: app "relay", stream "cam7", from 127.0.0.1: wrong role \(role root_relay\)/) }, 5),
	'role change: viewer dropped');
ok(wait_until(sub { log_lines($edge, qr/mesh: publish dropped: app "relay", stream "cam7", from 127.0.0.1: unknown stream \(role root_relay\)/) }, 5),
	'role change: the relay push dropped');
ok(defined reap($viewer, 10), 'role change: the viewer was disconnected');
ok(defined reap($root, 10), 'role change: the pusher was disconnected');

$edge->stop;
$master->stop;
done_testing();
