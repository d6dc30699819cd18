#!/usr/bin/perl

# The ladder's renditions are aligned: the encoded rendition cuts its segments where the copied
# source does (at the broadcaster's keyframes, here every 1.48 s, not on a 2 s grid), so the
# same segment number starts at the same instant in every rendition, as the MPD's
# segmentAlignment="true" says.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(spawn wait_until log_lines reap viewer_token);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'align-secret';
my $t = Mesh::Test->new(name => 'align');
my $media = $t->media_dir;
$t->write_standalone_table($secret, cam1 => 'k1');
$t->write_node_conf(http => $t->edge_http(renditions => [ 'source', 'small 320x180 300k 64k' ], mesh_segment => '2s',
	mesh_window => 30, dash => 1));
$t->run;
my $rtmp = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
my $http = 'http://127.0.0.1:' . $t->port(2);
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);
my $ua = HTTP::Tiny->new(timeout => 30);

# A broadcaster whose keyframes fall off the segment grid: one every 37 frames at 25 fps.
my $pub = spawn('ffmpeg', '-nostdin', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=25',
	'-f', 'lavfi', '-i', 'sine=frequency=440', '-t', 60, '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-preset', 'ultrafast',
	'-g', 37, '-keyint_min', 37, '-sc_threshold', 0, '-c:a', 'aac', '-f', 'flv', "$rtmp/cam1?key=k1");
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');
ok(wait_until(sub { $ua->get("$http/dash/cam1/manifest.mpd?$tok")->{status} == 200 }, 20), 'transcoding');

# Enough segments for a comparison.
my $dir = "$media/cam1";
sub numbers {
	my ($rep) = @_;
	return map { /chunk-$rep-(\d+)\.m4s$/ ? $1 : () } glob("$dir/chunk-$rep-*.m4s");
}
ok(wait_until(sub { numbers(0) >= 6 && numbers(1) >= 6 }, 40), 'six segments per rendition');

# The first video packet's time of one segment, from its init segment + the segment (read
# where ffmpeg writes them).
sub start_of {
	my ($rep, $n) = @_;
	my $f = $t->testdir . "/seg-$rep-$n.mp4";
	open my $o, '>', $f or die;
	for my $part ("init-$rep.m4s", sprintf('chunk-%d-%05d.m4s', $rep, $n)) {
		open my $i, '<', "$dir/$part" or return undef;
		local $/;
		print {$o} scalar <$i>;
	}
	close $o;
	my @pts = map { /^([\d.]+)/ ? $1 : () } qx{ffprobe -v error -select_streams v:0 -show_entries packet=pts_time -of csv=p=0 '$f' 2>/dev/null};
	@pts = sort { $a <=> $b } @pts;
	return $pts[0];
}

my %have1 = map { $_ => 1 } numbers(1);
my @common = grep { $have1{$_} } sort { $a <=> $b } numbers(0);
pop @common;    # the newest may be still being written
my @diffs;
for my $n (@common[1 .. $#common]) {
	my ($s0, $s1) = (start_of(0, $n), start_of(1, $n));
	next unless defined $s0 && defined $s1;
	push @diffs, sprintf('%d: %.3f/%.3f', $n, $s0, $s1) if abs($s0 - $s1) > 0.041;
	$n == $common[1] and diag(sprintf('segment %d starts at %.3f s (source) and %.3f s (small)', $n, $s0, $s1));
}
ok(@common >= 4, 'segments to compare: ' . scalar @common);
is(join(', ', @diffs), '', 'every segment starts at the same time in both renditions (within a frame)');

my $mpd = $ua->get("$http/dash/cam1/manifest.mpd?$tok")->{content};
like($mpd, qr/segmentAlignment="true"/, 'the MPD says aligned');

kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
done_testing();
