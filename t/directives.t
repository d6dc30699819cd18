#!/usr/bin/perl

# Directive and table errors: `nginx -t` fails, names the directive or file, the bad value and
# where (file:line), in nginx's wording; good configurations pass.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(sha256_hex);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $t = Mesh::Test->new(name => 'conf');
my $dir = $t->testdir;
my $sha = sha256_hex('k');

$t->write_file('good.json', qq({"version": 3, "publish": {"cam1": {"key_sha256": "$sha"}}}));
$t->write_file('relay.json', qq({"version": 3, "role": "relay"}));
mkdir "$dir/adir";

my %tables = (
	'syntax.json' => qq({\n  "version": 1,\n  "relay": {\n}),
	'role.json' => q({"role": "edge"}),
	'stream.json' => q({"ingest": {"../etc": []}}),
	'space.json' => q({"relay": {"a b": []}}),
	'nokey.json' => q({"ingest": {"cam1": [{"node_id": "r1", "node_url": "rtmp://127.0.0.1/relay"}]}}),
	'nodeid.json' => q({"ingest": {"cam1": [{"node_id": "r 1", "node_url": "rtmp://127.0.0.1/relay", "node_key": "k"}]}}),
	'sha.json' => q({"publish": {"cam1": {"key_sha256": "xyz"}}}),
	'url.json' => q({"ingest": {"cam1": [{"node_id": "r1", "node_url": "http://127.0.0.1/relay", "node_key": "k"}]}}),
	'version.json' => q({"version": "one"}),
);
$t->write_file($_, $tables{$_}) for keys %tables;
$t->write_file('empty.key', "\n");
$t->write_file('master.key', "k\n");

# [ directives at rtmp{} level, expected message (regex), line of the block named (or undef) ]
my @bad = (
	[ 'mesh_node_id "a b";', qr/invalid value "a b" in "mesh_node_id" directive, it must be 1-128 characters/, 1 ],
	[ "mesh_node_id a;\n    mesh_node_id b;", qr/"mesh_node_id" directive is duplicate/, 2 ],
	[ 'mesh_node_id;', qr/invalid number of arguments in "mesh_node_id" directive/, 1 ],
	[ 'mesh_role edge;', qr/invalid value "edge" in "mesh_role" directive, it must be "ingest", "root_relay", "relay" or "standalone"/, 1 ],
	[ "mesh_role relay;\n    mesh_role relay;", qr/"mesh_role" directive is duplicate/, 2 ],
	[ 'mesh_role ingest;', qr/"mesh_node_id" is required for role "ingest"/ ],
	[ 'mesh_table_file relay.json;', qr/"mesh_node_id" is required for role "relay"/ ],
	[ 'mesh_table_file missing.json;', qr/mesh_table_file "\Q$dir\E\/missing.json": open\(\) failed \(2: No such file or directory\)/, 1 ],
	[ 'mesh_table_file adir;', qr/mesh_table_file "\Q$dir\E\/adir": (?:open|read)\(\) failed \(21: Is a directory\)/, 1 ],
	[ "mesh_table_file good.json;\n    mesh_table_file good.json;", qr/"mesh_table_file" directive is duplicate/, 2 ],
	[ 'mesh_table_file syntax.json;', qr/syntax.json": invalid table: line 4, column 1: /, 1 ],
	[ 'mesh_table_file role.json;', qr/role.json": invalid table: role: unknown role "edge"/, 1 ],
	[ 'mesh_table_file stream.json;', qr/invalid table: ingest."..\/etc": invalid stream id/, 1 ],
	[ 'mesh_table_file space.json;', qr/invalid table: relay."a b": invalid stream id/, 1 ],
	[ 'mesh_table_file nokey.json;', qr/invalid table: ingest.cam1\[0\].node_key: missing/, 1 ],
	[ 'mesh_table_file nodeid.json;', qr/invalid table: ingest.cam1\[0\].node_id: invalid node id "r 1"/, 1 ],
	[ 'mesh_table_file sha.json;', qr/invalid table: publish.cam1.key_sha256: not 64 hex digits/, 1 ],
	[ 'mesh_table_file url.json;', qr/invalid table: ingest.cam1\[0\].node_url: "http:\/\/127.0.0.1\/relay" is not an rtmp:\/\/ URL/, 1 ],
	[ 'mesh_table_file version.json;', qr/invalid table: version: not a non-negative integer/, 1 ],
	[ 'mesh_master ftp://m;', qr/invalid value "ftp:\/\/m" in "mesh_master" directive, it must start with "http:\/\/" or "https:\/\/"/, 1 ],
	[ 'mesh_master http://m/?x=1;', qr/invalid value "http:\/\/m\/\?x=1" in "mesh_master" directive, it must not have a query/, 1 ],
	[ 'mesh_master http:///x;', qr/"mesh_master" directive, it has no host/, 1 ],
	[ "mesh_master http://m;\n    mesh_master http://m;", qr/"mesh_master" directive is duplicate/, 2 ],
	[ 'mesh_master http://127.0.0.1:1;', qr/"mesh_master" needs "mesh_master_key" or "mesh_master_key_file"/ ],
	[ "mesh_master_key a;\n    mesh_master_key_file k;", qr/"mesh_master_key_file" directive is duplicate/, 2 ],
	[ 'mesh_master_key_file nokey;', qr/mesh_master_key_file "\Q$dir\E\/nokey": open\(\) failed \(2: No such file or directory\)/, 1 ],
	[ 'mesh_master_key_file empty.key;', qr/empty master key in "mesh_master_key_file" directive/, 1 ],
	[ 'mesh_master_path beat /hb;', qr/invalid endpoint "beat" in "mesh_master_path" directive, it must be "announce", "heartbeat", "streams", "auth" or "route"/, 1 ],
	[ 'mesh_master_path auth hb;', qr/invalid path "hb" in "mesh_master_path" directive, it must start with "\/"/, 1 ],
	[ "mesh_master_path auth /a;\n    mesh_master_path auth /b;", qr/"mesh_master_path" directive "auth" is duplicate/, 2 ],
	[ 'mesh_rtmp_url http://x;', qr/invalid value "http:\/\/x" in "mesh_rtmp_url" directive, it must be a rtmp:\/\/ URL/, 1 ],
	[ 'mesh_http_url rtmp://x;', qr/invalid value "rtmp:\/\/x" in "mesh_http_url" directive, it must be a http:\/\/ or https:\/\/ URL/, 1 ],
	[ 'mesh_heartbeat_interval soon;', qr/"mesh_heartbeat_interval" directive invalid value/, 1 ],
	[ "mesh_poll_wait 5s;\n    mesh_poll_wait 5s;", qr/"mesh_poll_wait" directive is duplicate/, 2 ],
	[ 'mesh_master_timeout 3x;', qr/"mesh_master_timeout" directive invalid value/, 1 ],
);

sub conf {
	my ($main, $app) = @_;
	$app //= 'mesh on;';
	return "%%TEST_GLOBALS%%\nevents {}\nrtmp {\n    # main\n    $main\n    %%TEST_GLOBALS_RTMP%%\n"
		. "    server {\n        listen 127.0.0.1:%%PORT_1%%;\n"
		. "        application live {\n            $app\n            live on;\n        }\n    }\n}\n";
}

# The line number of the "# main" marker in the written configuration.
sub main_line {
	my @lines = split /\n/, $t->read_file('nginx.conf');
	for my $i (0 .. $#lines) { return $i + 1 if $lines[$i] =~ /# main$/ }
	die "no marker";
}

for my $case (@bad) {
	my ($main, $re, $line) = @$case;
	$t->write_file_expand('nginx.conf', conf($main));
	my ($ok, $out) = $t->test_config;
	ok(!$ok, "refused: $main");
	like($out, qr/\[emerg\] .*$re/, "message: $main") or diag($out);
	$line += main_line() if defined $line;
	my $where = defined $line ? qr/ in \Q$dir\E\/nginx.conf:$line$/m : qr/ in \Q$dir\E\/nginx.conf:\d+$/m;
	like($out, $where, "file:line: $main");
}

# Application-level errors: nginx's own wording for the flag, and context checks.
for my $case (
	[ 'mesh maybe;', qr/invalid value "maybe" in "mesh" directive, it must be "on" or "off"/ ],
	[ "mesh on;\n            mesh on;", qr/"mesh" directive is duplicate/ ],
	[ 'mesh_role relay;', qr/"mesh_role" directive is not allowed here/ ],
) {
	my ($app, $re) = @$case;
	$t->write_file_expand('nginx.conf', conf('', $app));
	my ($ok, $out) = $t->test_config;
	ok(!$ok, "refused in application: $app");
	like($out, qr/\[emerg\] $re in \Q$dir\E\/nginx.conf:\d+/, "message: $app") or diag($out);
}

# Good configurations pass.
for my $main ('', 'mesh_table_file good.json;', "mesh_node_id ingest-1;\n    mesh_role ingest;\n    mesh_table_file good.json;",
	"mesh_node_id e1;\n    mesh_table_file relay.json;")
{
	$t->write_file_expand('nginx.conf', conf($main));
	my ($ok, $out) = $t->test_config;
	ok($ok, "accepted: " . ($main || 'no mesh directives')) or diag($out);
}

# A host that does not resolve is a warning, not an error: the target may come later.
$t->write_file('unresolved.json', q({"ingest": {"cam1": [{"node_id": "r1", "node_url": "rtmp://no-such-host.invalid:1936/relay", "node_key": "k"}]}}));
$t->write_file_expand('nginx.conf', conf("mesh_node_id i1;\n    mesh_role ingest;\n    mesh_table_file unresolved.json;"));
{
	my ($ok, $out) = $t->test_config;
	ok($ok, 'unresolvable host: accepted');
	like($out, qr/\[warn\] mesh_table_file ".*unresolved.json": host of "rtmp:\/\/no-such-host.invalid:1936\/relay" not resolved \(.*\): pushes to it are skipped/,
		'unresolvable host: warned') or diag($out);
}

# A master with every directive set passes; with more than one worker it needs the table file
# (the workers that do not speak for the node follow it).
my $full = "mesh_node_id e1;\n    mesh_role relay;\n    mesh_master https://master.example:8443/api/;\n"
	. "    mesh_master_key_file master.key;\n    mesh_master_path announce /v1/announce;\n    mesh_master_path streams /v1/streams;\n"
	. "    mesh_rtmp_url rtmp://203.0.113.5:1935;\n    mesh_http_url https://edge1.example;\n"
	. "    mesh_heartbeat_interval 5s;\n    mesh_poll_wait 1m;\n    mesh_master_timeout 3s;";
$t->write_file_expand('nginx.conf', conf($full));
{
	my ($ok, $out) = $t->test_config;
	ok($ok, 'every master directive: accepted') or diag($out);
}
$t->write_file_expand('nginx.conf', "worker_processes 2;\n" . conf($full));
{
	my ($ok, $out) = $t->test_config;
	ok(!$ok, 'a master with two workers and no table file: refused');
	like($out, qr/\[emerg\] "mesh_master" with "worker_processes 2" needs "mesh_table_file" \(one worker speaks for the node, the others follow the table file it writes\) in \S+nginx\.conf:\d+/,
		'... says why, and where mesh_master is') or diag($out);
}
$t->write_file_expand('nginx.conf', conf("$full\n    mesh_table_file good.json;") =~ s/^events/worker_processes 2;\nrtmp_auto_push on;\nevents/mr);
{
	my ($ok, $out) = $t->test_config;
	ok($ok, 'a master with two workers and a table file: accepted') or diag($out);
}
$t->write_file_expand('nginx.conf', "worker_processes 2;\n" . conf('mesh_table_file good.json;'));
{
	my ($ok, $out) = $t->test_config;
	ok($ok, 'no master: more workers are fine') or diag($out);
	like($out, qr/\[warn\] "worker_processes 2" without "rtmp_auto_push on": a stream is seen only by the worker it is published into/,
		'more workers without rtmp_auto_push: a warning says what it means') or diag($out);
}
# (after conf()'s load_module lines: the directive is nginx-rtmp's)
$t->write_file_expand('nginx.conf', "worker_processes 2;\n" . (conf('mesh_table_file good.json;') =~ s/^events/rtmp_auto_push on;\nevents/mr));
{
	my ($ok, $out) = $t->test_config;
	ok($ok, 'more workers with rtmp_auto_push: fine') or diag($out);
	unlike($out, qr/rtmp_auto_push/, 'and no warning') or diag($out);
}

# The edge's http{} directives.
sub http_conf {
	my ($main, $loc) = @_;
	return "%%TEST_GLOBALS%%\nevents {}\nrtmp {\n    %%TEST_GLOBALS_RTMP%%\n    server { listen 127.0.0.1:%%PORT_1%%; application live { mesh on; live on; } }\n}\n"
		. "http {\n    access_log off;\n    $main\n    server {\n        listen 127.0.0.1:%%PORT_2%%;\n        location /hls/ { $loc }\n    }\n}\n";
}
for my $case (
	[ 'mesh_rendition 360p 640x361 800k 96k;', 'mesh_media hls;', qr/invalid "mesh_rendition" directive: invalid size "640x361"/ ],
	[ 'mesh_rendition 360p 640x360 800 96k;', 'mesh_media hls;', qr/invalid "mesh_rendition" directive: invalid video bitrate "800"/ ],
	[ 'mesh_rendition 360p;', 'mesh_media hls;', qr/invalid number of arguments in "mesh_rendition" directive|invalid "mesh_rendition" directive: it must be/ ],
	[ "mesh_rendition a 320x180 300k 64k;\n    mesh_rendition a 640x360 800k 96k;", 'mesh_media hls;', qr/invalid "mesh_rendition" ladder: rendition "a" is duplicate/ ],
	[ 'mesh_rtmp_source http://x/live;', 'mesh_media hls;', qr/invalid value "http:\/\/x\/live" in "mesh_rtmp_source" directive/ ],
	[ 'mesh_segment 2;', 'mesh_media mp4;', qr/invalid value "mp4" in "mesh_media" directive, it must be "hls" or "dash"/ ],
	[ 'mesh_window many;', 'mesh_media hls;', qr/"mesh_window" directive invalid number/ ],
	[ "mesh_media_root /a;\n    mesh_media_root /b;", 'mesh_media hls;', qr/"mesh_media_root" directive is duplicate/ ],
	[ '', "mesh_media hls;\n mesh_media dash;", qr/"mesh_media" directive is duplicate/ ],
) {
	my ($main, $loc, $re) = @$case;
	$t->write_file_expand('nginx.conf', http_conf($main, $loc));
	my ($ok, $out) = $t->test_config;
	ok(!$ok, "refused: $main $loc");
	like($out, qr/\[emerg\] $re.* in \Q$dir\E\/nginx.conf:\d+/, "message: $main $loc") or diag($out);
}
$t->write_file_expand('nginx.conf', http_conf("mesh_media_root media;\n    mesh_ffmpeg ffmpeg;\n    mesh_rendition source;\n    mesh_rendition 720p 1280x720 2800k 128k;\n    mesh_segment 4s;\n    mesh_window 5;\n    mesh_transcode_idle 1m;\n    mesh_manifest_wait 10s;", 'mesh_media dash;'));
{
	my ($ok, $out) = $t->test_config;
	ok($ok, 'every http directive: accepted') or diag($out);
}

# The table's role wins over mesh_role, with a warning.
$t->write_file_expand('nginx.conf', conf("mesh_node_id e1;\n    mesh_role ingest;\n    mesh_table_file relay.json;"));
my ($ok, $out) = $t->test_config;
ok($ok, 'table role and mesh_role differ: accepted');
like($out, qr/\[warn\] mesh_table_file ".*relay.json" sets role "relay", which overrides "mesh_role ingest"/, 'with a warning');

done_testing();
