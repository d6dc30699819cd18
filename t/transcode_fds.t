#!/usr/bin/perl

# Descriptors: ffmpeg inherits none of the worker's (nginx opens its sockets without
# close-on-exec: ffmpeg held the listening sockets, the event loop's epoll, the error log and
# clients' connections, which then stayed open as long as it ran); and the transcode supervisor
# holds none per restart: ffmpeg killed again and again, the worker's open descriptors stay as
# many as with the first ffmpeg.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap viewer_token transcoders);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'fds-secret';
my $t = Mesh::Test->new(name => 'fds');
my $media = $t->media_dir;
$t->write_standalone_table($secret, cam1 => 'k1');
$t->write_node_conf(http => $t->edge_http(mesh_transcode_idle => '60s'));
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $ua = HTTP::Tiny->new(timeout => 30);
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);

sub transcoder { (transcoders("$media/cam1"))[0] }
sub worker {
	my ($w) = grep { (qx{cat /proc/$_/cmdline 2>/dev/null} // '') =~ /worker process/ } map { /^(\d+)$/ ? $1 : () } qx{pgrep -P @{[$t->pid]}};
	return $w;
}
sub fds {
	my ($pid) = @_;
	opendir(my $d, "/proc/$pid/fd") or return -1;
	return scalar grep { /^\d+$/ } readdir $d;
}

my $pub = publish("$rtmp/cam1?key=k1", secs => 300);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');
is($ua->get("$http/hls/cam1/master.m3u8?$tok")->{status}, 200, 'transcoding');
my $w = worker();
ok($w, "worker $w");
my $first = fds($w);

# What ffmpeg holds: stdin (/dev/null), its output pipe as stdout and stderr, its own RTMP
# connection, the files it writes.
my $f = transcoder();
my @links = map { readlink($_) // '' } glob("/proc/$f/fd/*");
is(join(' ', grep { /eventpoll|eventfd|error\.log|access\.log/ } @links), '', "ffmpeg holds none of the worker's event loop or logs");
is(scalar(grep { /^socket:/ } @links), 1, 'one socket: its own connection') or diag("@links");
like(readlink("/proc/$f/fd/2") // '', qr/^pipe:/, 'its stderr is a pipe the worker reads');

# Four kills (a fifth within 30 s would give the transcode up), each new ffmpeg serving again.
my @counts;
for my $i (1 .. 4) {
	my $pid = transcoder() or last;
	$t->allow_alert(qr/unknown process $pid exited on signal 9/);
	kill 'KILL', $pid;
	ok(wait_until(sub { my $p = transcoder(); $p && $p != $pid && log_lines($t, qr/transcode of stream "cam1" started/) > $i }, 15),
		"kill $i: a new ffmpeg");
	wait_until(sub { $ua->get("$http/hls/cam1/master.m3u8?$tok")->{status} == 200 }, 15);
	push @counts, fds($w);
}
diag("worker fds: first $first, after each restart: @counts");
# (a descriptor may be in use for a moment: an HTTP request, an RTMP handshake)
ok(wait_until(sub { fds($w) <= $first }, 5), "worker descriptors flat after restarts ($first → @counts → " . fds($w) . ')');
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
done_testing();
