#!/usr/bin/perl

# mesh_status: the node's figures as JSON and Prometheus text — node, table, master links,
# live streams with viewers, pushes with reconnects, transcodes, refusals by reason. Private by
# default: loopback clients only, unless nginx's `allow` names the client (from this host's own
# non-loopback addresses: no traffic leaves the machine).

use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status wait_until log_lines reap spawn free_port);
use Mesh::FakeMaster;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

# This host's own addresses that are not loopback (scope global), one IPv4 and one IPv6 at most.
sub own_address {
	my ($family) = @_;
	my ($a) = map { m{\binet6? ([0-9a-f.:]+)/} ? $1 : () } `ip -o -$family addr show scope global 2>/dev/null`;
	return $a;
}
my $ext4 = own_address(4);
my $ext6 = own_address(6);
diag('no non-loopback address on this host: the widening cases are skipped') unless $ext4 || $ext6;
my @listen = ('127.0.0.1', '[::1]', ($ext4 // ()), ($ext6 ? "[$ext6]" : ()));
my $allow = join '', map { "allow $_; " } ($ext4 // ()), ($ext6 // ());

my $master = Mesh::FakeMaster->new;
my $down = free_port();
my $t = Mesh::Test->new(name => 'ingest-1');
chmod 0777, $t->testdir;
$t->write_file('master.key', $master->node_key('ingest-1'));
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
}, http => $t->edge_http(mesh_ffmpeg => undef, mesh_segment => undef, mesh_manifest_wait => undef,
	renditions => [ 'source', 'small 320x180 300k 64k' ], listen => \@listen, locations => <<LOCATIONS));
location = /status { mesh_status; }
location = /status-closed { mesh_status; deny all; }
location = /status-ours { mesh_status; $allow deny all; }
location = /status-all { mesh_status; allow all; }
location = /status-ban { mesh_status; deny 192.0.2.77; deny 2001:db8::77; }
LOCATIONS
$master->set_auth('cam1', allow => JSON::PP::true, ttl_s => 60, credential => 'vtok');
$t->run;
ok(wait_until(sub { log_lines($t, qr/table version 3 from master in force/) }, 10), 'table in force');
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $ua = HTTP::Tiny->new(timeout => 30);
sub status { my $r = $ua->get("$http/status"); $r->{success} ? decode_json($r->{content}) : undef }

is($ua->get("$http/status-closed")->{status}, 403, 'deny all: 403');

# Who may ask: loopback by default; others once an `allow` names them.
my $port2 = $t->port(2);
sub code_from {
	my ($from, $to, $path) = @_;
	my $host = $to =~ /:/ ? "[$to]" : $to;
	return HTTP::Tiny->new(timeout => 10, local_address => $from)->get("http://$host:$port2$path")->{status};
}
is(code_from('127.0.0.1', '127.0.0.1', '/status'), 200, 'loopback: served by default');
is(code_from('127.0.0.2', '127.0.0.1', '/status'), 200, '127.0.0.2 (127.0.0.0/8): served by default');
is(code_from('::1', '::1', '/status'), 200, '::1: served by default');
is(code_from('127.0.0.1', '127.0.0.1', '/status-ban'), 200, 'loopback, a deny-only list: served');
is(code_from('127.0.0.1', '127.0.0.1', '/status-all'), 200, 'loopback, allow all: served');
is(code_from('127.0.0.1', '127.0.0.1', '/status-ours'), 403, 'loopback, not in the allow list before deny all: nginx refuses');
for my $ext (grep { defined } $ext4, $ext6) {
	is(code_from($ext, $ext, '/status'), 403, "from $ext: refused by default");
	is(code_from($ext, $ext, '/status-ban'), 403, "from $ext: a deny-only list opens nothing");
	is(code_from($ext, $ext, '/status-ours'), 200, "from $ext: served once an allow names it");
	is(code_from($ext, $ext, '/status-all'), 200, "from $ext: served with allow all");
	is(code_from($ext, $ext, '/status-closed'), 403, "from $ext: deny all");
}
ok(log_lines($t, qr/access forbidden by mesh_status/), 'the refusal is logged') if $ext4 || $ext6;

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
