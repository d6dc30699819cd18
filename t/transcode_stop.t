#!/usr/bin/perl

# Stopping ffmpeg is graceful (SIGTERM, again, SIGKILL only after a grace period), and a worker
# that exits never kills a transcode itself: nginx, which reaps every child, logs an alert for
# a child killed by a signal. A node quit as its publisher leaves, five times, and stopped fast
# (TERM) while transcoding, twice, and stopped as soon as started, five times: no alert, no
# "exited on signal" in the error log.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use IO::Socket::INET;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap viewer_token transcoders);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'stop-secret';
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);

# A node transcoding with ffmpeg, or with the program `$ffmpeg->($t, $media)` writes.
sub node {
	my ($name, $ffmpeg) = @_;
	my $t = Mesh::Test->new(name => $name);
	my $media = $t->media_dir;
	$t->write_standalone_table($secret, cam1 => 'k1');
	my %prog = $ffmpeg ? (mesh_ffmpeg => $ffmpeg->($t, $media)) : ();
	$t->write_node_conf(http => $t->edge_http(renditions => [ 'source', 'small 320x180 300k 64k' ], %prog));
	$t->run;
	return ($t, $media);
}

# Publish, start the transcode, wait until it serves.
sub transcoding {
	my ($t) = @_;
	my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
	my $http = 'http://127.0.0.1:' . $t->port(2);
	my $pub = publish("$rtmp/cam1?key=k1", secs => 120);
	wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5);
	my $ua = HTTP::Tiny->new(timeout => 30);
	my $ok = wait_until(sub { $ua->get("$http/hls/cam1/master.m3u8?$tok")->{status} == 200 }, 20);
	# Some segments written: ffmpeg busy, as in production.
	sleep 1.5;
	return ($pub, $ok);
}

for my $i (1 .. 5) {
	my ($t, $media) = node("quit$i");
	my ($pub, $ok) = transcoding($t);
	ok($ok, "run $i: transcoding");
	my @pids = transcoders($media);
	# The publisher leaves and the node quits at once.
	kill 'TERM', $pub;
	$t->stop;
	reap($pub, 5);
	ok(wait_until(sub { !grep { kill 0, $_ } @pids }, 5), "run $i: no ffmpeg left");
	unlike($t->error_log, qr/\[alert\]|exited on signal/, "run $i: no alert");
}

for my $i (1 .. 2) {
	my ($t, $media) = node("fast$i");
	my ($pub, $ok) = transcoding($t);
	ok($ok, "fast stop $i: transcoding");
	my @pids = transcoders($media);
	$t->stop(fast => 1);
	ok(wait_until(sub { !grep { kill 0, $_ } @pids }, 5), "fast stop $i: no ffmpeg left");
	ok(wait_until(sub { !-e "$media/cam1" }, 5), "fast stop $i: its files removed");
	kill 'TERM', $pub;
	reap($pub, 5);
}

# Stopped as soon as started (the publisher leaves as the first viewer comes): ffmpeg gets its
# SIGTERM once it handles it, not while it is starting (it would die of it: an alert).
{
	my ($t, $media) = node('young');
	my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
	my $http = 'http://127.0.0.1:' . $t->port(2);
	for my $i (1 .. 5) {
		my $pub = publish("$rtmp/cam1?key=k1", secs => 120);
		wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) >= $i }, 5);
		# The request starts ffmpeg; the publisher leaves a moment later.
		my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(2)) or die;
		print $c "GET /hls/cam1/master.m3u8?$tok HTTP/1.0\r\n\r\n";
		wait_until(sub { log_lines($t, qr/transcode of stream "cam1" started/) >= $i }, 5);
		kill 'TERM', $pub;
		reap($pub, 5);
		wait_until(sub { log_lines($t, qr/transcode of stream "cam1" ended/) >= $i }, 10);
	}
	is(scalar(() = log_lines($t, qr/transcode of stream "cam1" ended/)), 5, 'five transcodes stopped as they started');
	unlike($t->error_log, qr/\[alert\]|exited on signal/, 'no alert');
	$t->stop;
}

# An ffmpeg that ignores SIGTERM while the node runs: SIGKILL after the grace period, not before.
{
	# Configured from the start: a reload right after start can reach nginx before its workers
	# are up and be lost (seen once).
	my ($t, $media) = node('stubborn', sub {
		my ($t, $media) = @_;
		my $stub = $t->write_file('stubborn', "#!/bin/sh\ntrap '' TERM\necho \$\$ > $media/stubborn.pid\nwhile :; do sleep 0.1; done\n");
		chmod 0755, $stub;
		return $stub;
	});
	my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
	my $pub = publish("$rtmp/cam1?key=k1", secs => 120);
	wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5);
	HTTP::Tiny->new(timeout => 1)->get('http://127.0.0.1:' . $t->port(2) . "/hls/cam1/master.m3u8?$tok");
	ok(wait_until(sub { -s "$media/stubborn.pid" }, 5), 'a transcoder that ignores SIGTERM runs');
	my ($spid) = (qx{cat $media/stubborn.pid} // '') =~ /(\d+)/;
	my $t0 = time;
	kill 'TERM', $pub;
	reap($pub, 5);
	ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" stopping: publisher left/) }, 5), 'stopping');
	sleep 4;
	ok(kill(0, $spid), 'not killed within 4 s');
	ok(wait_until(sub { !kill(0, $spid) }, 6), sprintf('killed after the grace period (%.1f s)', time - $t0));
	ok(log_lines($t, qr/did not stop on SIGTERM within 5000 ms, killing it/), 'and says so');
	# The one alert nginx logs then is the price of a child that would not stop.
	$t->allow_alert(qr/unknown process $spid exited on signal 9/);
	$t->stop;
}

done_testing();
