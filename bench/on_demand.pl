#!/usr/bin/perl

# Benchmark 5: on demand. A viewer's first HLS request at an edge → the first segment playable
# (master playlist, media playlist, init and first segment fetched), under the reference master
# with edge fan-out 0, so no edge holds a stream until asked:
#   - absent: the edge does not have the stream (route request, push from the root relay,
#     transcode start);
#   - present: the stream is already pushed to the edge (an RTMP viewer brought it), only the
#     transcode starts.
# One stream per round; p50 and max. Each first segment is checked with ffprobe afterwards.
#
#   perl bench/on_demand.pl [rounds]          (default 5)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use HTTP::Tiny;
use Time::HiRes qw(time sleep);
use Test::More;
use Mesh::Test qw(publish probe wait_until log_lines reap);
use Mesh::Master;
use Mesh::Node;

my $rounds = shift // 5;
my $master = Mesh::Master->new(args => [qw(--heartbeat-interval 1 --node-timeout 3 --edge-fanout 0)]);
my %node;
for ([ 'ingest-1', 'ingest' ], [ 'root-1', 'root_relay' ], [ 'edge-1', 'relay' ], [ 'edge-2', 'relay' ]) {
	my ($id, $role) = @$_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master, extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;',
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }',
		($role eq 'relay' ? (hls => { mesh_rendition => 'source', mesh_manifest_wait => '30s' }) : ()));
	$t->allow_alert(qr/exited on signal 9/);
	$t->run;
	$node{$id} = $t;
}
wait_until(sub { 4 == grep { $_->{alive} } values %{$master->nodes} }, 10) or die 'nodes';
my $ingest = 'rtmp://127.0.0.1:' . $node{'ingest-1'}->port(1) . '/live';
my @pubs;
for my $i (1 .. 2 * $rounds) {
	my $key = $master->stream_key("s$i");
	push @pubs, publish("$ingest/s$i?key=$key", secs => 900);
}
wait_until(sub { 2 * $rounds == keys %{$master->live} }, 20) or die 'streams not live';
my $token = sub { $master->viewer_token($_[0]) };
my $ua = HTTP::Tiny->new(timeout => 60);

# First request → first segment fetched; returns ms, and checks the segment.
sub first_segment {
	my ($edge, $s) = @_;
	my $base = 'http://127.0.0.1:' . $node{$edge}->port(2) . "/hls/$s";
	my $q = '?token=' . $token->($s);
	my $t0 = time;
	my $m = $ua->get("$base/master.m3u8$q");
	die "$edge $s: master $m->{status} $m->{content}" unless $m->{success};
	my ($pl) = grep { /^[^#\s]/ } split /\n/, $m->{content};
	my $p = $ua->get("$base/$pl");
	die "$edge $s: playlist $p->{status}" unless $p->{success};
	my ($init) = $p->{content} =~ /#EXT-X-MAP:URI="([^"]+)"/;
	my ($seg) = grep { /^[^#\s]/ } split /\n/, $p->{content};
	my $i = $ua->get("$base/$init");
	my $g = $ua->get("$base/$seg");
	my $ms = (time - $t0) * 1000;
	die "$edge $s: segment $g->{status}" unless $i->{success} && $g->{success};
	my $f = $node{$edge}->testdir . "/check-$s.mp4";
	open my $fh, '>:raw', $f or die;
	print $fh $i->{content}, $g->{content};
	close $fh;
	my $frames = `ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 $f`;
	die "$edge $s: first segment does not decode" unless ($frames // 0) =~ /^\d+/ && $frames > 0;
	return $ms;
}

my (@absent, @present);
for my $r (1 .. $rounds) {
	push @absent, first_segment('edge-2', "s$r");
	my $s = 's' . ($rounds + $r);
	my $rtmp = 'rtmp://127.0.0.1:' . $node{'edge-1'}->port(1) . "/relay/$s?token=" . $token->($s);
	wait_until(sub { probe($rtmp, secs => 1, timeout => 10)->{video} > 0 }, 30) or die "$s never reached edge-1";
	push @present, first_segment('edge-1', $s);
}
kill 'TERM', @pubs;
reap($_, 5) for @pubs;
$_->stop for values %node;

sub p50 { my @s = sort { $a <=> $b } @_; $s[int($#s / 2 + 0.5)] }
sub mx { my @s = sort { $a <=> $b } @_; $s[-1] }
printf "| on demand (%d rounds, 1 s segments, source rendition) | p50 ms | max ms |\n|---|---:|---:|\n", $rounds;
printf "| stream absent at the edge (route + push + transcode) | %.0f | %.0f |\n", p50(@absent), mx(@absent);
printf "| stream already at the edge (transcode only) | %.0f | %.0f |\n", p50(@present), mx(@present);
done_testing();
