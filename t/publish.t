#!/usr/bin/perl

# Publish admission on an ingest node and a standalone node: broadcaster keys, unknown streams,
# odd names, node pushes refused; one error-log line per refusal, never the key itself.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status probe wait_until log_lines reap);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $t = Mesh::Test->new(name => 'ingest');
my $key = 'bkey-7f3a9c';
$t->write_file('table.json', qq({"version": 1, "publish": {"cam1": {"key_sha256": "@{[sha256_hex($key)]}"}}}));
$t->write_node_conf(rtmp => q{
    mesh_node_id ingest-1;
    mesh_role ingest;
    mesh_table_file table.json;
}, apps => q{
    application live { mesh on; live on; }
    application open { live on; }
});
$t->run;
my $base = 'rtmp://127.0.0.1:' . $t->port(1);

# Each refused publish: ffmpeg fails, and the log says why.
my @refused = (
	[ "$base/live/cam1?key=wrong", undef, 'cam1', 'wrong key' ],
	[ "$base/live/cam1", undef, 'cam1', 'no key' ],
	[ "$base/live/cam1?key=", undef, 'cam1', 'no key' ],
	[ "$base/live/cam2?key=$key", undef, 'cam2', 'unknown stream' ],
	[ "$base/live", "../x?key=$key", '../x', 'bad name' ],
	[ "$base/live", "a b?key=$key", 'a b', 'bad name' ],
	[ "$base/live", ('y' x 300) . "?key=$key", 'y' x 64, 'bad name' ],
	[ "$base/live/cam1?node=root-1&key=$key", undef, 'cam1', 'wrong role' ],
);
for my $case (@refused) {
	my ($url, $playpath, $stream, $why) = @$case;
	my $label = defined $playpath ? "name " . substr($playpath, 0, 20) : $url =~ s/.*live//r;
	isnt(publish_status($url, playpath => $playpath), 0, "refused: $label");
	ok(wait_until(sub { log_lines($t, qr/mesh: publish refused: app "live", stream "\Q$stream\E.*", from 127\.0\.0\.1: $why/) }, 3),
		"logged: $label: $why");
}

# The right key publishes, and the stream plays (standalone plays are tested in play.t;
# an ingest node serves no viewers, so read it through the mesh-off application instead).
my $pub = publish("$base/live/cam1?key=$key", secs => 8);
ok(wait_until(sub { log_lines($t, qr/mesh: publish accepted: stream "cam1" from broadcaster/) }, 5), 'right key: accepted');
ok(!defined reap($pub, 2), 'publisher keeps running');

# A mesh-off application is left alone.
is(publish_status("$base/open/anything", secs => 1), 0, 'mesh off: publish untouched');

# Secrets never reach the error log (the shipped level is notice).
my $log = $t->error_log;
unlike($log, qr/\Q$key\E/, 'no stream key in the error log');
is(scalar(() = $log =~ /mesh: publish refused/g), scalar @refused, 'one line per refusal');

kill 'TERM', $pub;
reap($pub, 5);
$t->stop;

# A standalone node takes broadcasters too, and refuses node pushes.
my $s = Mesh::Test->new(name => 'standalone');
$s->write_file('table.json', qq({"role": "standalone", "publish": {"cam1": {"key_sha256": "@{[sha256_hex($key)]}"}}}));
$s->write_node_conf();
$s->run;
$base = 'rtmp://127.0.0.1:' . $s->port(1);
isnt(publish_status("$base/live/cam1?key=nope"), 0, 'standalone: wrong key refused');
isnt(publish_status("$base/live/cam1?node=x&key=k"), 0, 'standalone: node push refused');
ok(wait_until(sub { log_lines($s, qr/stream "cam1", from 127.0.0.1: wrong role/) }, 3), 'standalone: logged wrong role');
$pub = publish("$base/live/cam1?key=$key", secs => 6);
my $got = probe("$base/live/cam1", secs => 2);
ok($got->{video} > 0 && $got->{audio} > 0, "standalone: published stream plays ($got->{video} video, $got->{audio} audio packets)");
reap($pub, 10);
$s->stop;

done_testing();
