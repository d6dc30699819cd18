#!/usr/bin/perl

# A transcoder that dies as it starts, again and again: restarted with backoff while viewers
# keep asking (held, some giving up and leaving), given up after five restarts (every held
# viewer told why, and the next one too), then ended when its publisher leaves (a new
# publisher's viewer gets a new try). A stop while a restart is pending ends the transcode at
# once: no restart follows it. The worker lives through it all.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use IO::Socket::INET;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap viewer_token);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'restart-secret';
my $t = Mesh::Test->new(name => 'restart');
my $media = $t->media_dir;
$t->write_standalone_table($secret, cam1 => 'k1', cam2 => 'k2');
my $dying = $t->write_file('dying-ffmpeg', "#!/bin/sh\necho 'dying at once' >&2\nexit 1\n");
chmod 0755, $dying;
$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => $dying));
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my %tok = map { $_ => 'token=' . viewer_token($secret, $_, int(time) + 3600) } qw(cam1 cam2);

sub lines { scalar(() = log_lines($t, $_[0])) }
sub request {
	my ($stream) = @_;
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(2)) or die "connect: $!";
	print $c "GET /hls/$stream/master.m3u8?$tok{$stream} HTTP/1.0\r\n\r\n";
	return $c;
}
sub answer { my ($c) = @_; local $/; my $a = <$c> // ''; close $c; return $a }

# Dies again and again while viewers ask.
my $pub = publish("$rtmp/cam1?key=k1", secs => 120);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'cam1 published');
my @held = map { request('cam1') } 1 .. 3;
for my $n (1 .. 4) {
	ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" died, restart $n of 5/) }, 10), "died, restart $n");
	# One more viewer held, one that leaves before its answer.
	push @held, request('cam1');
	HTTP::Tiny->new(timeout => 0.3)->get("$http/hls/cam1/master.m3u8?$tok{cam1}");
}
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" given up after 5 restarts/) }, 15), 'given up');
is(lines(qr/transcode of stream "cam1" started/), 6, 'after six starts');
my @answers = map { answer($_) } @held;
is(scalar(grep { m{^HTTP/1\.\d 503} && /transcoder unavailable: ffmpeg failed 5 times/ } @answers), scalar(@held),
	'every held viewer: 503, ffmpeg failed 5 times') or diag(join "\n---\n", @answers);
like(answer(request('cam1')), qr/transcoder unavailable: ffmpeg failed 5 times/, 'the next viewer too, at once');
is(lines(qr/transcode of stream "cam1" started/), 6, 'no start for it');
ok(lines(qr/ffmpeg of stream "cam1": dying at once/) >= 6, "its output logged");

# Given up, then its publisher leaves: it ends; a new publisher's viewer gets a new try.
kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" ended/) }, 5), 'given up, publisher left: ended');
$pub = publish("$rtmp/cam1?key=k1", secs => 120);
ok(wait_until(sub { lines(qr/publish accepted: stream "cam1"/) == 2 }, 5), 'cam1 published again');
my $c = request('cam1');
ok(wait_until(sub { lines(qr/transcode of stream "cam1" started/) == 7 }, 5), 'a new try');
ok(wait_until(sub { lines(qr/transcode of stream "cam1" died, restart 1 of 5/) == 2 }, 5), 'counted from one');
close $c;
kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { lines(qr/transcode of stream "cam1" ended/) == 2 }, 5), 'ended again, a restart pending');

# A stop while a restart is pending (restart 4, in 2 s): ended at once, no restart after.
$pub = publish("$rtmp/cam2?key=k2", secs => 120);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam2"/) }, 5), 'cam2 published');
$c = request('cam2');
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam2" died, restart 4 of 5 in 2000 ms/) }, 10), 'restart 4 pending');
my $t0 = time;
kill 'TERM', $pub;
reap($pub, 5);
ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam2" ended/) }, 5), 'publisher left: ended');
ok(time - $t0 < 1.9, sprintf('before the restart was due (%.1f s)', time - $t0));
my $starts = lines(qr/transcode of stream "cam2" started/);
is($starts, 4, 'after four starts');
like(answer($c), qr{^HTTP/1\.\d 404}, 'its held viewer: stream not live here');
sleep 3;
is(lines(qr/transcode of stream "cam2" started/), $starts, 'no restart after the stop');
ok(!log_lines($t, qr/transcode of stream "cam2" died, restart 5/), 'no restart pending either');

# The same worker all along.
is(lines(qr/exited on signal|worker process \d+ exited/), 0, 'no worker died');
$t->stop;
done_testing();
