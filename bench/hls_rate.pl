#!/usr/bin/perl

# Benchmark 7: HLS request rate with a token check on every request, against nginx serving the
# same files with no check. One node (standalone, a viewer secret) transcodes a real stream
# (source rendition, 4 s segments, the default 6-segment window); the same worker
# serves its directory twice: through `mesh_media hls` (token verified, file opened without
# following symlinks, playlists rewritten with the token) and through a plain `location /cam1/` with
# `root` (no check). wrk (keep-alive, one thread, 16 connections) asks one URL per run; runs
# alternate ours / plain; requests per second and the ratio ours / plain, per URL class:
#   - media playlist (ours: read and rewritten on every request; plain: a static file),
#   - media segment (both sendfile),
#   - master playlist (ours: also checks that the playlists it names exist).
#
#   perl bench/hls_rate.pl [seconds per run] [rounds]      (default 8 s, 2 rounds)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use Test::More;
use Mesh::Test qw(publish wait_until log_lines reap viewer_token);

my $secs = shift // 8;
my $rounds = shift // 2;
system('sh', '-c', 'command -v wrk >/dev/null') == 0 or die "bench/hls_rate.pl needs wrk (apt-get install wrk)\n";

my $t = Mesh::Test->new(name => 'hls_rate');
my $media = $t->media_dir;
$t->write_standalone_table('bench', cam1 => 'k1');
$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => undef, mesh_manifest_wait => undef, sendfile => 'on',
	head => 'types { application/vnd.apple.mpegurl m3u8; video/mp4 m4s; }', mesh_segment => '4s',
	mesh_transcode_idle => '600s', locations => "location /cam1/ { root $media; }"));
$t->allow_alert(qr/exited on signal 9/);
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $tok = viewer_token('bench', 'cam1', int(time) + 3600);
my $pub = publish("$rtmp/cam1?key=k1", secs => 3600);
wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 10) or die 'not published';
my $ua = HTTP::Tiny->new(timeout => 30);
my $m = $ua->get("$http/hls/cam1/master.m3u8?token=$tok");
die "master: $m->{status} $m->{content}" unless $m->{success};
wait_until(sub { my @c = glob("$media/cam1/chunk-0-*.m4s"); @c >= 2 }, 30) or die 'no segments';
# The newest complete segment (it stays listed for about 30 s: picked again for each pair).
sub chunk { (sort map { s{.*/}{}r } glob("$media/cam1/chunk-0-*.m4s"))[-2] }
my %url = (
	'media playlist' => sub { ("/hls/cam1/media_0.m3u8?token=$tok", '/cam1/media_0.m3u8') },
	'media segment' => sub { my $c = chunk(); ("/hls/cam1/$c?token=$tok", "/cam1/$c") },
	'master playlist' => sub { ("/hls/cam1/master.m3u8?token=$tok", '/cam1/master.m3u8') },
);
for my $c (sort keys %url) {
	for my $u ($url{$c}->()) {
		my $r = $ua->get("$http$u");
		die "$c $u: $r->{status}" unless $r->{status} == 200;
	}
}
my $size = -s "$media/cam1/" . chunk();
my $lines = () = $ua->get("$http/cam1/media_0.m3u8")->{content} =~ /\n/g;

sub wrk {
	my ($u) = @_;
	my $out = qx{wrk -t1 -c16 -d${secs}s '$http$u' 2>&1};
	my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
	my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
	die "wrk $u: $out" unless defined $rps;
	die "wrk $u: $non2xx refused" if $non2xx;
	return $rps;
}

my %rps;
for my $round (1 .. $rounds) {
	for my $c (sort keys %url) {
		my ($ours, $plain) = $url{$c}->();
		push @{$rps{$c}{ours}}, wrk($ours);
		push @{$rps{$c}{plain}}, wrk($plain);
	}
}
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;

sub mean { my $s = 0; $s += $_ for @_; $s / @_ }
printf "| HLS requests/s (%d × %d s runs each, wrk 1 thread 16 connections; segment %.0f KB, media playlist %d lines) | token checked (ours) | no check (plain root) | ours / plain |\n",
	$rounds, $secs, $size / 1024, $lines;
print "|---|---:|---:|---:|\n";
for my $c ('media playlist', 'media segment', 'master playlist') {
	my ($o, $p) = (mean(@{$rps{$c}{ours}}), mean(@{$rps{$c}{plain}}));
	printf "| %s | %.0f | %.0f | %.2f |\n", $c, $o, $p, $o / $p;
}
done_testing();
