#!/usr/bin/perl

# mesh_status: the node's figures as JSON and Prometheus text — node, table, master links,
# live streams with viewers, pushes with reconnects, transcodes, refusals by reason — behind
# nginx's allow/deny.

use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status wait_until log_lines reap spawn free_port);
use Mesh::FakeMaster;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $master = Mesh::FakeMaster->new;
my $down = free_port();
my $t = Mesh::Test->new(name => 'ingest-1');
chmod 0777, $t->testdir;
my $media = $t->media_dir;
$t->write_file('master.key', $master->key);
$t->write_file('table.json', '{"version": 0}');
$master->set_table('ingest-1', { version => 3, role => 'standalone', publish => { cam1 => { key_sha256 => sha256_hex('k1') } },
	ingest => { cam1 => [ { node_id => 'root-9', node_url => "rtmp://127.0.0.1:$down/relay", node_key => 'k9' } ] } });
my $murl = $master->url;
$t->write_node_conf(rtmp => qq{
    mesh_node_id ingest-1;
    mesh_table_file table.json;
    mesh_master $murl;
    mesh_master_key_file master.key;
    mesh_heartbeat_interval 1s;
    mesh_poll_wait 3s;
}, http => <<CONF);
http {
    access_log off;
    mesh_media_root $media;
    mesh_rtmp_source rtmp://127.0.0.1:%%PORT_1%%/live;
    mesh_rendition source;
    mesh_rendition small 320x180 300k 64k;
    server {
        listen 127.0.0.1:%%PORT_2%%;
        location /hls/ { mesh_media hls; }
        location = /status { mesh_status; allow 127.0.0.1; deny all; }
        location = /status-closed { mesh_status; deny all; }
    }
}
CONF
$master->set_auth('cam1', allow => JSON::PP::true, ttl_s => 60, credential => 'vtok');
$t->run;
ok(wait_until(sub { log_lines($t, qr/table version 3 from master in force/) }, 10), 'table in force');
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $ua = HTTP::Tiny->new(timeout => 30);
sub status { my $r = $ua->get("$http/status"); $r->{success} ? decode_json($r->{content}) : undef }

is($ua->get("$http/status-closed")->{status}, 403, 'deny all: 403');

isnt(publish_status("$rtmp/cam1?key=nope"), 0, 'a wrong key (the master denies it too)');
isnt(publish_status("$rtmp/bad.name?key=k1"), 0, 'a bad name');
my $pub = publish("$rtmp/cam1?key=k1", secs => 60);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');
my $viewer = spawn('ffprobe', '-v', 'error', '-rw_timeout', '20000000', '-read_intervals', '%+15',
	'-show_entries', 'packet=codec_type', '-of', 'csv=p=0', "$rtmp/cam1?token=vtok");
is($ua->get("$http/hls/cam1/master.m3u8?token=vtok")->{status}, 200, 'transcoding');

my $s;
ok(wait_until(sub { $s = status(); $s && @{$s->{streams}} && $s->{streams}[0]{viewers} == 1 && @{$s->{pushes}}
	&& $s->{pushes}[0]{reconnects} >= 1 }, 15), 'status JSON') or diag(explain($s));
is($s->{node_id}, 'ingest-1', 'node id');
is($s->{role}, 'standalone', 'role');
is($s->{table}{version}, 3, 'table version');
cmp_ok($s->{table}{age_s}, '>=', 0, 'table age');
ok(($s->{table}{apply_us_max} // 0) > 0 && $s->{table}{apply_us_max} >= $s->{table}{apply_us_last}, 'event-loop time of table changes');
is_deeply([ map { $_->{link} } sort { $a->{link} cmp $b->{link} } @{$s->{master}} ], [qw(announce heartbeat streams)], 'master links');
ok((grep { $_->{up} } @{$s->{master}}) == 3, 'every link up');
is_deeply([ @{$s->{streams}[0]}{qw(stream source viewers)} ], [ 'cam1', 'broadcaster', 1 ], 'live stream with its source and viewers');
cmp_ok($s->{streams}[0]{in_kbps}, '>', 0, "incoming bitrate ($s->{streams}[0]{in_kbps} kbps)");
is_deeply([ @{$s->{pushes}[0]}{qw(stream target state)} ], [ 'cam1', 'root-9', 'retrying' ], 'a push to a down target: retrying');
cmp_ok($s->{pushes}[0]{reconnects}, '>=', 1, 'with its reconnects counted');
is_deeply([ @{$s->{transcodes}[0]}{qw(stream state restarts)} ], [ 'cam1', 'running', 0 ], 'transcode running');
is_deeply($s->{transcodes}[0]{renditions}, [ 'source', 'small' ], 'with its renditions');
my %refused = map { ("$_->{action}/$_->{reason}" => $_->{count}) } @{$s->{refusals}};
is($refused{'publish/auth'}, 1, 'refusals: the master\'s deny');
is($refused{'publish/bad name'}, 1, 'refusals: bad name');

my $p = $ua->get("$http/status?format=prometheus");
is($p->{headers}{'content-type'}, 'text/plain; version=0.0.4', 'Prometheus content type');
my $text = $p->{content};
like($text, qr/^mesh_refusals_total\{node="ingest-1",role="standalone",action="publish",reason="bad name"\} 1$/m, 'refusal counter');
like($text, qr/^mesh_table_version\{node="ingest-1",role="standalone"\} 3$/m, 'table version gauge');
like($text, qr/^mesh_table_apply_max_seconds\{node="ingest-1",role="standalone"\} \d+\.\d{6}$/m, 'apply time gauge');
like($text, qr/^mesh_master_link_up\{node="ingest-1",role="standalone",link="streams"\} 1$/m, 'link gauge');
like($text, qr/^mesh_stream_viewers\{node="ingest-1",role="standalone",stream="cam1",source="broadcaster"\} 1$/m, 'viewers gauge');
like($text, qr/^mesh_push_connected\{node="ingest-1",role="standalone",stream="cam1",target="root-9"\} 0$/m, 'push gauge');
like($text, qr/^mesh_transcode_running\{node="ingest-1",role="standalone",stream="cam1"\} 1$/m, 'transcode gauge');
like($text, qr/^# TYPE mesh_push_reconnects_total counter$/m, 'counters typed');

# The master goes away: its links say so.
$master->stop;
ok(wait_until(sub { $s = status(); (grep { $_->{link} eq 'heartbeat' && !$_->{up} && $_->{last_error} } @{$s->{master}}) }, 10),
	'master gone: the heartbeat link is down, with its error') or diag(explain($s));
my ($hb) = grep { $_->{link} eq 'heartbeat' } @{$s->{master}};
cmp_ok($hb->{consecutive_failures}, '>=', 1, 'failures counted');
ok(defined $hb->{last_success_unix}, 'last success kept');

kill 'TERM', $pub, $viewer;
reap($_, 5) for $pub, $viewer;
$t->stop;
done_testing();
