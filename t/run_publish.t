#!/usr/bin/perl

# `make run` prints a publish command whose stream browsers can play: run as printed, it
# publishes H.264 in 4:2:0 (testsrc through libx264 is High 4:4:4 without -pix_fmt yuv420p,
# which browsers refuse), and so is the source rendition players get over HLS.

use strict;
use warnings;
use Test::More;
use Text::ParseWords qw(shellwords);
use lib 't/lib';
use Mesh::Test qw(free_port spawn wait_until reap);
use IO::Socket::INET;

plan(skip_all => 'no dist/ (make dist)') unless -x 'dist/sbin/nginx' && -x 'dist/sbin/mesh-tool';

my $port = free_port();
my $hport = free_port();
$ENV{MESH_RTMP_PORT} = $port;
$ENV{MESH_HTTP_PORT} = $hport;
my $pid = open(my $out, '-|', 'bash', 'scripts/run-standalone.sh') // die "run: $!";

my ($text, $play_url, $hls_url) = ('');
while (my $line = <$out>) {
	$text .= $line;
	$play_url = $1 if $line =~ /ffplay '(rtmp:\/\/\S+\?token=\S+)'/;
	$hls_url = $1 if $line =~ /HLS:\s+(http:\/\/\S+)/;
	last if $line =~ /stop: Ctrl-C/;
}
my ($cmd) = $text =~ /publish:\s+(ffmpeg.*?'rtmp:\/\/\S+')/s;
ok($cmd, 'prints a publish command');
$cmd =~ s/\\\n//g;
my @argv = shellwords($cmd);
is($argv[0], 'ffmpeg', 'an ffmpeg command');
ok(wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }, 5), 'node listens');

# As printed, with -nostdin in front (no terminal here).
sub accepted { scalar(() = (do { local (@ARGV, $/) = ('dist/logs/error.log'); <> } // '') =~ /publish accepted: stream "demo"/g) }
my $before = accepted();
my $pub = spawn($argv[0], '-nostdin', @argv[1 .. $#argv]);
ok(wait_until(sub { accepted() > $before }, 10), 'the printed command publishes');
sub video {
	my ($url) = @_;
	my $v = `timeout 30 ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,profile,pix_fmt -of csv=p=0 '$url' 2>/dev/null`;
	return (split /\n/, $v)[0] // '';
}
my $rtmp = video($play_url);
like($rtmp, qr/^h264,(Constrained Baseline|Baseline|Main|High),yuv420p$/, "published: $rtmp");
like(video($hls_url), qr/^h264,\w.*,yuv420p$/, 'over HLS (the source rendition, copied): 4:2:0 too');

kill 'TERM', $pub;
reap($pub, 12);
kill 'QUIT', $pid;    # the script exec'd nginx in the foreground
ok(defined reap($pid, 10), 'node stops on QUIT');
close $out;

done_testing();
