#!/usr/bin/perl

# Red team, this round: a push's other end is hostile. An ingest's table names two targets for
# its stream that a compromised or broken root relay could be: one completes the RTMP
# handshake and then says nothing (it never answers a command or a ping), one accepts the TCP
# connection and never handshakes. Each push is stalled after mesh_push_timeout, closed, logged
# once (not per retry) and retried no faster than the push retry interval (no reconnect storm);
# the ingest's worker holds no more descriptors at the end than while the first pushes ran (a
# stalled push's connection is closed, never leaked); the broadcaster is never disturbed, and a
# good target alongside still gets the stream.

use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Socket ();
use HTTP::Tiny;
use Time::HiRes qw(sleep time);
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish wait_until log_lines reap free_port);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $ingest = Mesh::Test->new(name => 'ingest-1');
my $root = Mesh::Test->new(name => 'root-1');
my ($pi, $pr) = map { $_->port(1) } $ingest, $root;
my ($mute, $tarpit) = (free_port(), free_port());
my $dir = $ingest->testdir;

# A hostile RTMP server: counts its connections (one line each in $file); `handshake` answers
# C0C1 with S0S1S2, then reads everything and writes nothing more.
sub hostile {
	my ($port, $file, $handshake) = @_;
	my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port", Listen => 64, ReuseAddr => 1)
		or die "listen $port: $!";
	my $pid = fork // die "fork: $!";
	return $pid if $pid;
	my $sel = IO::Select->new($l);
	my (%got, @pit);
	while (1) {
		for my $s ($sel->can_read(0.2)) {
			if ($s == $l) {
				my $c = $l->accept or next;
				open(my $f, '>>', $file) or die; print $f "conn\n"; close $f;
				# The tarpit holds the connection open, never reading it.
				if ($handshake) { $sel->add($c); $got{$c} = '' } else { push @pit, $c }
				next;
			}
			my $n = sysread($s, my $buf, 65536);
			if (!$n) { $sel->remove($s); delete $got{$s}; close $s; next; }
			if (defined $got{$s} && length($got{$s}) < 1537) {
				$got{$s} .= $buf;
				if (length($got{$s}) >= 1537) {
					my $s1 = pack('NN', 0, 0) . ("\x5a" x 1528);
					syswrite($s, "\x03" . $s1 . substr($got{$s}, 1, 1536));
				}
			}
		}
	}
}

my $bkey = 'broadcaster-key-1';
my $to_root = qq({"node_id": "root-1", "node_url": "rtmp://127.0.0.1:$pr/relay", "node_key": "k-ingest1-root1-cam1"});
my $to_mute = qq({"node_id": "root-8", "node_url": "rtmp://127.0.0.1:$mute/relay", "node_key": "k-ingest1-root8-cam1"});
my $to_pit = qq({"node_id": "root-9", "node_url": "rtmp://127.0.0.1:$tarpit/relay", "node_key": "k-ingest1-root9-cam1"});
my %tables = (
	'ingest-1' => qq({"version": 1, "role": "ingest", "publish": {"cam1": {"key_sha256": "@{[sha256_hex($bkey)]}"}},
		"ingest": {"cam1": [$to_root, $to_mute, $to_pit]}}),
	'root-1' => qq({"version": 1, "role": "root_relay", "ingest": {"cam1": [$to_root]}}),
);
for my $t ($ingest, $root) {
	my $id = $t->name;
	$t->write_file('table.json', $tables{$id});
	$t->write_node_conf(rtmp => qq{
	    mesh_node_id $id;
	    mesh_table_file table.json;
	}, apps => qq{
	    application live { mesh on; live on; }
	    application relay { mesh on; live on; }
	});
}
my @servers = (hostile($mute, "$dir/mute.conns", 1), hostile($tarpit, "$dir/pit.conns", 0));
$_->run for $root, $ingest;

my $conns = sub { my $f = shift; open(my $h, '<', $f) or return 0; my @l = <$h>; scalar @l };
my $fds = sub {
	my ($w) = grep { /^\d+$/ } map { (split ' ', $_)[0] } grep { /nginx: worker/ }
		`ps -o pid=,args= --ppid @{[$ingest->pid]}`;
	return -1 unless $w;
	opendir(my $d, "/proc/$w/fd") or return -1;
	scalar grep { /^\d+$/ } readdir $d;
};

my $pub = publish("rtmp://127.0.0.1:$pi/live/cam1?key=$bkey", secs => 40);
ok(wait_until(sub { log_lines($root, qr/publish accepted: stream "cam1" from ingest-1/) }, 10),
	'the good target gets the stream');
for my $n (qw(root-8 root-9)) {
	ok(wait_until(sub { log_lines($ingest, qr/push of stream "cam1" to node "$n" stalled: nothing heard/) }, 8),
		"$n: stalled (nothing heard from it), closed")
		or diag(join "", grep { /"$n"/ } split /^/, $ingest->error_log);
}
my $t0 = time;
my $fd0 = $fds->();
my ($m0, $p0) = ($conns->("$dir/mute.conns"), $conns->("$dir/pit.conns"));
sleep 12;
my $dt = time - $t0;
my ($m1, $p1) = ($conns->("$dir/mute.conns") - $m0, $conns->("$dir/pit.conns") - $p0);
# RETRY is 3 s: at most one connection per 3 s, and one more for the edges of the window.
my $most = int($dt / 3) + 1;
ok($m1 >= 1 && $m1 <= $most, "the mute target: retried, no storm ($m1 connections in ${dt}s, at most $most)");
ok($p1 >= 1 && $p1 <= $most, "the tarpit: retried, no storm ($p1 connections in ${dt}s, at most $most)");
for my $n (qw(root-8 root-9)) {
	is(scalar(() = log_lines($ingest, qr/to node "$n" stalled/)), 1, "$n: the stall logged once, not per retry");
}
my $fd1 = $fds->();
ok($fd0 > 0 && $fd1 <= $fd0 + 2, "no descriptors leaked by the stalled pushes ($fd0 then $fd1)");
ok(!defined reap($pub, 0), 'the broadcaster undisturbed');
ok(!log_lines($ingest, qr/\[(?:alert|emerg|crit)\]/), 'no alert in the ingest log');

kill 'TERM', $pub;
reap($pub, 5);
kill 'KILL', @servers;
waitpid($_, 0) for @servers;
$_->stop for $ingest, $root;

# The edge's HLS segments, sent from the descriptor the handler opened: ranges, validators and
# HEAD as nginx's static module answers them; encoded and dotted paths refused; clients that
# leave in the middle of a segment leave no descriptor behind.
my $secret = 'red-secret';
my $e = Mesh::Test->new(name => 'red-edge');
$e->write_standalone_table($secret, cam1 => 'k1');
$e->write_node_conf(http => $e->edge_http(mesh_manifest_wait => undef));
$e->run;
my $http = 'http://127.0.0.1:' . $e->port(2);
my $ua = HTTP::Tiny->new(timeout => 20);
my $good = Mesh::Test::viewer_token($secret, 'cam1', int(time) + 3600);
$pub = publish('rtmp://127.0.0.1:' . $e->port(1) . "/live/cam1?key=k1", secs => 60);
ok(wait_until(sub { log_lines($e, qr/publish accepted: stream "cam1"/) }, 5), 'edge: published');
my $r = $ua->get("$http/hls/cam1/master.m3u8?token=$good");
is($r->{status}, 200, 'edge: master playlist') or diag("$r->{status} $r->{content}");
my @segs;
wait_until(sub {
	my $p = $ua->get("$http/hls/cam1/media_0.m3u8?token=$good");
	@segs = map { s/\?.*//r } grep { /^chunk-/ } split /\n/, ($p->{content} // '');
	@segs >= 2;
}, 15);
ok(@segs >= 2, 'edge: segments listed');
my $seg = "$http/hls/cam1/$segs[0]?token=$good";
$r = $ua->get($seg);
my $len = length $r->{content};
is($r->{status}, 200, "a segment: 200 ($len bytes)");
my $etag = $r->{headers}{etag};
$r = $ua->request('HEAD', $seg);
ok($r->{status} == 200 && $r->{headers}{'content-length'} == $len && !length($r->{content}), 'HEAD: the length, no body');
$r = $ua->get($seg, { headers => { Range => 'bytes=0-0' } });
ok($r->{status} == 206 && length($r->{content}) == 1, 'Range 0-0: 206, one byte');
$r = $ua->get($seg, { headers => { Range => "bytes=$len-" } });
is($r->{status}, 416, 'a range past the end: 416');
$r = $ua->get($seg, { headers => { Range => 'bytes=0-1', 'If-Range' => '"not-it"' } });
ok($r->{status} == 200 && length($r->{content}) == $len, 'If-Range with another validator: the whole file');
$r = $ua->get($seg, { headers => { 'If-None-Match' => $etag } });
is($r->{status}, 304, 'If-None-Match: 304');
for my $path ("cam1/..%2f..%2ftable.json", "cam1/%2e%2e/cam1/$segs[0]", "cam1%2f$segs[0]", "cam1/$segs[0]%00.m4s",
	"cam1/./$segs[0]x", "..%2fcam1/$segs[0]") {
	my $st = $ua->get("$http/hls/$path?token=$good")->{status};
	ok($st != 200 || $path =~ m{^cam1(?:/%2e%2e/cam1/|%2f)}, "/hls/$path: not served from elsewhere ($st)");
}
# Clients that ask for a segment with a tiny receive window and leave mid-send.
my $efds = sub {
	my ($w) = grep { /^\d+$/ } map { (split ' ', $_)[0] } grep { /nginx: worker/ } `ps -o pid=,args= --ppid @{[$e->pid]}`;
	opendir(my $d, "/proc/$w/fd") or return -1;
	scalar grep { /^\d+$/ } readdir $d;
};
my $before = $efds->();
my @held;
for (1 .. 30) {
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $e->port(2)) or next;
	setsockopt($c, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 2048);
	print $c "GET /hls/cam1/$segs[0]?token=$good HTTP/1.1\r\nHost: x\r\n\r\n";
	push @held, $c;
}
sleep 1;
my $during = $efds->();
close $_ for @held;
ok(wait_until(sub { $efds->() <= $before + 1 }, 5), "clients gone mid-send: the worker's descriptors back ($before, $during while held, then " . $efds->() . ')');
kill 'TERM', $pub;
reap($pub, 5);
$e->stop;
done_testing();
