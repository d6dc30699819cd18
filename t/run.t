#!/usr/bin/perl

# `make run`'s node: scripts/run-standalone.sh starts the standalone node from dist/, and the
# URLs it prints work as printed (the sample key publishes, the printed token plays).

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(publish probe reap);
use Mesh::Run;

Mesh::Run::require_dist();

my $node = Mesh::Run->start;
my ($pub_url, $play_url, $hls_url) = ($node->publish_url, $node->play_url, $node->hls_url);
ok($pub_url, "prints a publish URL");
ok($play_url, "prints a play URL with a token");
ok($node->listens, 'node listens');

my $pub = publish($pub_url, secs => 20);
my $got = probe($play_url, secs => 2);
ok($got->{video} > 0 && $got->{audio} > 0, "printed URLs publish and play ($got->{video} video, $got->{audio} audio)");
ok($hls_url, 'prints an HLS URL');
my $hls = `timeout 30 ffprobe -v error -show_entries stream=codec_type -of csv=p=0 '$hls_url' 2>/dev/null`;
like($hls, qr/video/, 'the printed HLS URL plays (transcode started on demand)');
(my $no_token = $play_url) =~ s/\?token=.*//;
ok(!probe($no_token, timeout => 8)->{ok}, 'without the token: refused');
kill 'TERM', $pub;
reap($pub, 12);

$node->stop;

done_testing();
