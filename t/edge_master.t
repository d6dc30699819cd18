#!/usr/bin/perl

# An edge under a master: an HLS viewer for a stream the edge lacks makes exactly one route
# request (for any number of viewers) and plays once the stream is pushed in; viewers are
# asked about at the auth endpoint when the table has no viewer secret; an RTMP viewer keeps
# the transcode wanted; a role change stops it.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap spawn);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $master = Mesh::FakeMaster->new;
$master->set_table('edge-1', { version => 1, role => 'relay' });
my $edge = Mesh::Node->under_master(id => 'edge-1', master => $master,
	apps => 'application relay { mesh on; live on; }', hls => { mesh_transcode_idle => '3s' });
my $media = $edge->testdir . '/media';
$edge->run;
ok(wait_until(sub { log_lines($edge, qr/table version 1 from master in force/) }, 10), 'edge: table in force');
my $rtmp = 'rtmp://127.0.0.1:' . $edge->port(1) . '/relay';
my $http = 'http://127.0.0.1:' . $edge->port(2);
my $ua = HTTP::Tiny->new(timeout => 40);

sub transcoders { grep { (qx{cat /proc/$_/cmdline 2>/dev/null} // '') =~ /\Q$media\E/ } map { /^(\d+)$/ ? $1 : () } qx{pgrep -x ffmpeg} }

# Viewers are asked about (no viewer secret in the table); the route is asked once.
$master->set_auth('cam1', allow => JSON::PP::true, ttl_s => 60, credential => 'vtok');
$master->set_route('cam1', status => 'routed', tables => { 'edge-1' => { version => 2, role => 'relay',
	relay => { cam1 => [ { node_id => 'edge-1', node_url => 'rtmp://127.0.0.1:1/relay', node_key => 'k-r1-e1-cam1' } ] } } });
my @viewers = map { spawn('curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '40', "$http/hls/cam1/master.m3u8?token=vtok") } 1 .. 3;
ok(wait_until(sub { @{$master->requests('route')} }, 10), 'route asked');
ok(wait_until(sub { log_lines($edge, qr/table version 2 from master in force/) }, 10), 'routed table in force');
sleep 1;
is(scalar @{$master->requests('route')}, 1, 'one route request for three HLS viewers');
is(scalar(grep { $_->{body}{action} eq 'play' } @{$master->requests('auth')}), 1, 'the viewers\' token asked about once (then cached)');

# root-1 pushes the stream in; the waiting viewers get their manifest.
my $push = publish("$rtmp/cam1?node=root-1&key=k-r1-e1-cam1", secs => 120);
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) }, 10), 'push admitted');
is(scalar(grep { (reap($_, 30) // -1) == 0 } @viewers), 3, 'the three held requests completed');
my $r = $ua->get("$http/hls/cam1/master.m3u8?token=vtok");
is($r->{status}, 200, 'HLS manifest served');
is(scalar(transcoders()), 1, 'one ffmpeg for all of them');
is($ua->get("$http/hls/cam1/master.m3u8?token=wrong")->{status}, 403, 'a token the master denies: 403');

# An RTMP viewer keeps the stream wanted: no idle stop while it plays.
my $rtmp_viewer = spawn('ffprobe', '-v', 'error', '-rw_timeout', '30000000', '-read_intervals', '%+8',
	'-show_entries', 'packet=codec_type', '-of', 'csv=p=0', "$rtmp/cam1?token=vtok");
sleep 6;
is(scalar(() = log_lines($edge, qr/transcode of stream "cam1" stopping: idle/)), 0, 'RTMP viewer: no idle stop');
is(scalar(transcoders()), 1, 'RTMP viewer: ffmpeg still running');
reap($rtmp_viewer, 15);
ok(wait_until(sub { log_lines($edge, qr/transcode of stream "cam1" stopping: idle/) }, 10), 'RTMP viewer gone: idle stop');
ok(wait_until(sub { !transcoders() }, 6), 'idle: ffmpeg gone');

# A role that serves no viewers stops the transcodes.
is($ua->get("$http/hls/cam1/master.m3u8?token=vtok")->{status}, 200, 'transcoding again');
$master->set_role('edge-1', 'root_relay');
ok(wait_until(sub { log_lines($edge, qr/transcode of stream "cam1" stopping: role root_relay/) }, 10), 'role change: transcode stopped');
ok(wait_until(sub { !transcoders() }, 6), 'role change: ffmpeg gone');
$r = $ua->get("$http/hls/cam1/master.m3u8?token=vtok");
is($r->{status}, 404, 'role change: no HLS from a root relay');
like($r->{content}, qr/not served by a root_relay node/, 'with a reason');

kill 'TERM', $push;
reap($push, 5);
$edge->stop;
$master->stop;
done_testing();
