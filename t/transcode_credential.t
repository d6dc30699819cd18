#!/usr/bin/perl

# The transcoder's credential (what the node's own ffmpeg plays its stream with): single-use,
# for one stream, for one run of ffmpeg (a restart gets a new one), expired within seconds,
# never in the error log (ffmpeg's echo of its input URL is redacted). What /proc/<pid>/cmdline
# shows every local user no longer works once the transcode has connected.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap viewer_token transcoders);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'cred-secret';
my $t = Mesh::Test->new(name => 'cred');
my $media = $t->media_dir;
$t->write_standalone_table($secret, cam1 => 'k1', cam2 => 'k2');

# A stand-in for ffmpeg that only writes down its arguments and waits (SIGTERM ends it).
my $fake = $t->write_file('fake-ffmpeg', "#!/bin/sh\ntrap 'exit 0' TERM\n"
	. "echo \"\$\@\" > $media/argv.\$\$\nwhile :; do sleep 0.1; done\n");
chmod 0755, $fake;

sub conf {
	my ($ffmpeg, $source_port) = @_;
	$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => $ffmpeg,
		mesh_rtmp_source => "rtmp://127.0.0.1:$source_port/live", mesh_transcode_idle => '30s'));
}
conf($fake, '%%PORT_1%%');
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);

# A reload leaves the publishers with the old worker: publish again after each.
my @pubs;
sub republish {
	kill 'TERM', @pubs;
	reap($_, 5) for @pubs;
	my $n = () = log_lines($t, qr/publish accepted: stream "cam2"/);
	@pubs = (publish("$rtmp/cam1?key=k1", secs => 300), publish("$rtmp/cam2?key=k2", secs => 300));
	return wait_until(sub { log_lines($t, qr/publish accepted: stream "cam2"/) > $n }, 10) && sleep 1;
}
ok(republish(), 'published');

# The input URL each run of the stand-in got, by pid.
sub runs {
	my %r;
	for my $f (glob("$media/argv.*")) {
		my ($pid) = $f =~ /(\d+)$/;
		my $argv = do { local (@ARGV, $/) = ($f); <> } // '';
		$r{$pid} = $1 if $argv =~ m{(rtmp://\S+)};
	}
	return \%r;
}
HTTP::Tiny->new(timeout => 1)->get("$http/hls/cam1/master.m3u8?$tok");
ok(wait_until(sub { %{runs()} }, 5), 'the transcoder started');
my ($pid1, $url1) = %{runs()};
like($url1, qr{^\Q$rtmp\E/cam1\?node=standalone&key=[0-9a-f]{32}$}, 'its input carries a credential');
my ($key1) = $url1 =~ /key=(\w+)/;

# Bound to its stream: not for cam2 (and a wrong try does not burn it).
ok(!probe("$rtmp/cam2?node=standalone&key=$key1", secs => 1, timeout => 10)->{ok}, 'the credential does not play another stream');
ok(!probe("$rtmp/cam1?node=standalone&key=" . ('0' x 32), secs => 1, timeout => 10)->{ok}, 'a made-up credential plays nothing');
# Single use: it plays once (here, as if we were ffmpeg), then never again.
my $p = probe($url1, secs => 1, timeout => 10);
ok($p->{ok} && $p->{video} > 0, 'the credential plays its stream once');
ok(!probe($url1, secs => 1, timeout => 10)->{ok}, 'used: refused');

# A new run, a new credential; one nobody uses expires within seconds.
kill 'TERM', $pid1;
ok(wait_until(sub { keys %{runs()} == 2 }, 10), 'ffmpeg restarted');
my ($pid2) = grep { $_ != $pid1 } keys %{runs()};
my $url2 = runs()->{$pid2};
my ($key2) = $url2 =~ /key=(\w+)/;
ok($key2 && $key2 ne $key1, 'the new run has a new credential');
sleep 6;
ok(!probe($url2, secs => 1, timeout => 10)->{ok}, 'unused for 6 s: expired');

my $log = $t->error_log;
ok(index($log, $key1) < 0 && index($log, $key2) < 0, 'no credential in the error log');

# Real ffmpeg: once the transcode is up, what its command line shows plays nothing.
conf('/usr/bin/ffmpeg', '%%PORT_1%%');
$t->reload;
republish();
my $ua = HTTP::Tiny->new(timeout => 30);
ok(wait_until(sub { $ua->get("$http/hls/cam1/master.m3u8?$tok")->{status} == 200 }, 20), 'real transcode: plays');
my ($fpid) = transcoders("$media/cam1");
my $cmdline = qx{tr '\\0' ' ' < /proc/$fpid/cmdline};
my ($url3) = $cmdline =~ m{(rtmp://\S+key=[0-9a-f]{32})};
ok($url3, "ffmpeg's command line has its credential");
ok(!probe($url3, secs => 1, timeout => 10)->{ok}, 'replayed after the transcode connected: refused');
my ($key3) = ($url3 // '') =~ /key=(\w+)/;
ok($key3 && index($t->error_log, $key3) < 0, 'not in the error log');

# ffmpeg echoes its input URL when it fails (here: nothing listens at the source): the line is
# logged, the credential in it redacted.
my $closed = Mesh::Test::free_port();
conf('/usr/bin/ffmpeg', $closed);
$t->reload;
republish();
my $tok2 = 'token=' . viewer_token($secret, 'cam2', int(time) + 3600);
HTTP::Tiny->new(timeout => 1)->get("$http/hls/cam2/master.m3u8?$tok2");
ok(wait_until(sub { log_lines($t, qr/ffmpeg of stream "cam2": .*cam2\?node=standalone&key=xxx/) }, 10), "ffmpeg's echo of its input is logged, redacted")
	or diag(join "\n", log_lines($t, qr/ffmpeg of/));
like((log_lines($t, qr/ffmpeg of stream "cam2"/))[0], qr/\[error\]/, 'at its level');
unlike($t->error_log, qr/key=[0-9a-f]{32}/, 'no credential anywhere in the error log');

kill 'TERM', @pubs;
reap($_, 5) for @pubs;
$t->stop;
done_testing();
