#!/usr/bin/perl

# `make run`'s node: scripts/run-standalone.sh starts the standalone node from dist/, and the
# URLs it prints work as printed (the sample key publishes, the printed token plays).

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(free_port publish probe wait_until reap);
use IO::Socket::INET;

plan(skip_all => 'no dist/ (make dist)') unless -x 'dist/sbin/nginx' && -x 'dist/sbin/mesh-tool';

my $port = free_port();
my $hport = free_port();
$ENV{MESH_RTMP_PORT} = $port;
$ENV{MESH_HTTP_PORT} = $hport;
my $pid = open(my $out, '-|', 'bash', 'scripts/run-standalone.sh') // die "run: $!";

my ($pub_url, $play_url, $hls_url);
while (my $line = <$out>) {
	$pub_url = $1 if $line =~ /'(rtmp:\/\/\S+\?key=\S+)'/;
	$play_url = $1 if $line =~ /ffplay '(rtmp:\/\/\S+\?token=\S+)'/;
	$hls_url = $1 if $line =~ /HLS:\s+(http:\/\/\S+)/;
	last if $line =~ /stop: Ctrl-C/;
}
ok($pub_url, "prints a publish URL");
ok($play_url, "prints a play URL with a token");
ok(wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }, 5), 'node listens');

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

kill 'QUIT', $pid;    # the script exec'd nginx in the foreground
ok(defined reap($pid, 10), 'node stops on QUIT');
close $out;

done_testing();
