#!/usr/bin/perl

# `make run` prints a publish command whose stream browsers can play: run as printed, it
# publishes H.264 in 4:2:0 (testsrc through libx264 is High 4:4:4 without -pix_fmt yuv420p,
# which browsers refuse), and so is the source rendition players get over HLS.

use strict;
use warnings;
use Test::More;
use Text::ParseWords qw(shellwords);
use lib 't/lib';
use Mesh::Test qw(spawn wait_until reap);
use Mesh::Run;

Mesh::Run::require_dist();

my $node = Mesh::Run->start;
my ($play_url, $hls_url) = ($node->play_url, $node->hls_url);
my ($cmd) = $node->text =~ /publish:\s+(ffmpeg.*?'rtmp:\/\/\S+')/s;
ok($cmd, 'prints a publish command');
$cmd =~ s/\\\n//g;
my @argv = shellwords($cmd);
is($argv[0], 'ffmpeg', 'an ffmpeg command');
ok($node->listens, 'node listens');

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
$node->stop;

done_testing();
