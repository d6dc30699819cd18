#!/usr/bin/perl

# One ffmpeg per stream per node, whatever the number of workers: an edge (a table file, 2 and
# 4 workers, rtmp_auto_push) takes a stream pushed to it; HLS requests spread over its workers
# (many connections, `ss` tells which worker holds each) start one ffmpeg, whose playlists every
# worker serves; requests arriving only in a worker that does not run the ffmpeg keep it
# alive, and it stops when no worker has a request for the idle time. After a reload with a
# live transcode, at no time is there more than one ffmpeg, and none is left without its worker.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap viewer_token transcoders);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no ss') unless -x '/usr/bin/ss' || -x '/bin/ss';

my $secret = 'workers-secret';
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);
my $nkey = 'k-root1-edge1-cam1';

sub edge {
	my ($workers) = @_;
	my $t = Mesh::Test->new(name => "edge-w$workers");
	my $sock = "$t->{dir}/sock";
	mkdir $sock;
	chmod 0777, $sock;
	my $self = qq({"node_id": "edge-1", "node_url": "rtmp://127.0.0.1:@{[$t->port(1)]}/relay", "node_key": "$nkey"});
	$t->write_file('table.json', qq({"version": 1, "role": "relay", "viewer_secret": "$secret", "relay": {"cam1": [$self]}}));
	$t->write_node_conf(main => qq{
	    worker_processes $workers;
	    rtmp_auto_push on;
	    rtmp_socket_dir $sock;
	}, rtmp => q{
	    mesh_node_id edge-1;
	    mesh_table_file table.json;
	}, apps => q{
	    application relay { mesh on; live on; }
	}, http => $t->edge_http(mesh_rtmp_source => 'rtmp://127.0.0.1:%%PORT_1%%/relay', mesh_transcode_idle => '5s',
		# (every viewer here is 127.0.0.1: more than the default 8 held at once in one worker)
		mesh_manifest_wait_per_client => 64));
	$t->run;
	return $t;
}

# The worker pids of a node (children of its master).
sub workers {
	my ($t) = @_;
	my $master = $t->pid or return;
	return grep { (qx{ps -o ppid= -p $_} // '') =~ /^\s*$master\s*$/ } map { /(\d+)/ ? $1 : () } qx{pgrep -P $master};
}

sub ppid_of {
	my ($pid) = @_;
	my ($pp) = (qx{ps -o ppid= -p $pid 2>/dev/null} // '') =~ /(\d+)/;
	return $pp // 0;
}

# A kept-alive HTTP/1.1 connection: (socket, the pid of the worker holding it).
sub connection {
	my ($t) = @_;
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port(2), Timeout => 5) or return;
	my $lport = $c->sockport;
	my ($holder) = map { /pid=(\d+)/ ? $1 : () } grep { /127\.0\.0\.1:$lport\s/ }
		qx{ss -tnpH state established '( sport = :@{[$t->port(2)]} )' 2>/dev/null};
	return ($c, $holder);
}

# One request on a kept-alive connection: (status, body).
sub get {
	my ($c, $path) = @_;
	print $c "GET $path HTTP/1.1\r\nHost: edge\r\n\r\n" or return (0, '');
	my ($status, $len) = (0, 0);
	my $line = <$c> // return (0, '');
	($status) = $line =~ m{^HTTP/1\.1 (\d+)};
	while (defined($line = <$c>)) {
		last if $line =~ /^\r?\n$/;
		$len = $1 if $line =~ /^Content-Length:\s*(\d+)/i;
	}
	my $body = '';
	read($c, $body, $len) if $len;
	return ($status // 0, $body);
}

# The media playlist the entry manifest names (its token kept).
sub media_playlist {
	my ($master) = @_;
	my ($uri) = grep { !/^#/ && /\S/ } split /\n/, $master;
	return "/hls/cam1/$uri";
}

for my $n (split ' ', $ENV{WORKERS} // '2 4') {
	my $t = edge($n);
	my $media = "$t->{dir}/media";
	my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . "/relay/cam1?node=root-1&key=$nkey", secs => 180);
	ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1" from root-1/) }, 10), "$n workers: the push arrived");
	ok(wait_until(sub { log_lines($t, qr/stream "cam1" copied from the worker/) >= $n - 1 }, 10), "$n workers: copied into every worker");
	my @workers = workers($t);
	is(scalar(@workers), $n, "$n workers running");

	# Waves of concurrent viewers, each on its own connection, until every worker held some:
	# the entry manifest (held until ready), then the media playlist, twice.
	my %served;
	my ($asked, $good, $most) = (0, 0, 0);
	for my $wave (1 .. 8) {
		my @kids;
		for (1 .. 3 * $n) {
			my ($c, $holder) = connection($t);
			$served{$holder} = 1 if $holder;
			my $pid = fork // die "fork: $!";
			if ($pid == 0) {
				my ($s1, $m) = get($c, "/hls/cam1/master.m3u8?$tok");
				my ($s2) = $s1 == 200 ? get($c, media_playlist($m)) : (0);
				sleep 1;
				my ($s3) = $s1 == 200 ? get($c, media_playlist($m)) : (0);
				if (open my $fh, '>', "$t->{dir}/viewer-$$") { print $fh "$s1 $s2 $s3"; close $fh }
				POSIX::_exit($s1 == 200 && $s2 == 200 && $s3 == 200 ? 0 : 1);
			}
			close $c;
			push @kids, $pid;
		}
		for my $k (@kids) {
			while (waitpid($k, POSIX::WNOHANG()) == 0) {
				my $now = () = transcoders($media);
				$most = $now if $now > $most;
				sleep 0.2;
			}
			$asked++;
			$good++ if $? == 0;
			diag("viewer: " . $t->read_file("viewer-$k")) if $?;
		}
		last if keys %served >= $n;
	}
	is($good, $asked, "$n workers: every viewer got the entry manifest and its playlist ($good of $asked)");
	cmp_ok(scalar(keys %served), '>=', 2, "$n workers: viewers were served by several workers (" . join(' ', sort keys %served) . ')');
	is(scalar(grep { my $h = $_; !grep { $_ == $h } @workers } keys %served), 0, "$n workers: ... all of them workers (@workers)");
	is($most, 1, "$n workers: at most one ffmpeg at any time");
	my @ff = transcoders($media);
	is(scalar(@ff), 1, "$n workers: one ffmpeg");
	my $owner = @ff ? ppid_of($ff[0]) : 0;
	ok((grep { $_ == $owner } @workers), "$n workers: a child of a worker ($owner)");
	is(scalar(() = log_lines($t, qr/transcode of stream "cam1" started/)), 1, "$n workers: started once");

	# Requests only in another worker keep the owner's ffmpeg: 8 s of one request a second,
	# on a connection another worker holds (idle time 5 s).
	my ($c, $holder);
	for (1 .. 40) {
		($c, $holder) = connection($t);
		last if $holder && $holder != $owner;
		close $c if $c;
		undef $c;
	}
	ok($c, "$n workers: a connection held by a worker without the ffmpeg ($holder)");
	my ($s, $m) = get($c, "/hls/cam1/master.m3u8?$tok");
	is($s, 200, "$n workers: the entry manifest from that worker");
	my ($ok, $tries) = (0, 0);
	for (1 .. 8) {
		my ($st) = get($c, media_playlist($m));
		$tries++;
		$ok++ if $st == 200;
		sleep 1;
	}
	is($ok, $tries, "$n workers: its playlist all along from that worker");
	is(scalar(() = log_lines($t, qr/transcode of stream "cam1" stopping: idle/)), 0,
		"$n workers: not idle while another worker has requests");
	is_deeply([ transcoders($media) ], \@ff, "$n workers: the same ffmpeg");
	close $c;
	# No request anywhere: stopped once idle, node-wide.
	ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" stopping: idle/) }, 10), "$n workers: stopped when idle in every worker");
	ok(wait_until(sub { !transcoders($media) && !-e "$media/cam1" }, 8), "$n workers: no ffmpeg left, its directory gone");

	# A reload with a live transcode: the old worker's ffmpeg ends before another starts; never
	# two; none left without its worker.
	($c) = connection($t);
	($s) = get($c, "/hls/cam1/master.m3u8?$tok");
	is($s, 200, "$n workers: transcoding again");
	close $c;
	my @before = transcoders($media);
	is(scalar(@before), 1, "$n workers: one ffmpeg before the reload");
	$t->reload;
	my ($most2, $viewer_ok, $viewer_asked) = (0, 0, 0);
	my $until = time + 12;
	while (time < $until) {
		my @now = transcoders($media);
		$most2 = @now if @now > $most2;
		if (my ($c2) = connection($t)) {
			my ($st) = get($c2, "/hls/cam1/master.m3u8?$tok");
			$viewer_asked++;
			$viewer_ok++ if $st == 200;
			close $c2;
		}
		sleep 0.3;
	}
	cmp_ok($most2, '<=', 1, "$n workers: at most one ffmpeg during and after the reload");
	ok(wait_until(sub { !grep { kill 0, $_ } @before }, 8), "$n workers: the old generation's ffmpeg ended");
	my @after = transcoders($media);
	ok(@after <= 1, "$n workers: still at most one ffmpeg (" . scalar(@after) . ')');
	my @live = workers($t);
	my @orphans = grep { my $pp = ppid_of($_); !grep { $_ == $pp } @live } @after;
	is(scalar(@orphans), 0, "$n workers: no ffmpeg without its worker");
	diag("$n workers: $viewer_ok of $viewer_asked entry requests answered 200 across the reload");
	# The publisher comes back (into the new generation): one ffmpeg again, a new worker's child.
	kill 'TERM', $pub;
	reap($pub, 5);
	ok(wait_until(sub { !transcoders($media) }, 10), "$n workers: no ffmpeg once the publisher left");
	my $seen = () = log_lines($t, qr/publish accepted: stream "cam1" from root-1/);
	$pub = publish('rtmp://127.0.0.1:' . $t->port(1) . "/relay/cam1?node=root-1&key=$nkey", secs => 180);
	ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1" from root-1/) > $seen }, 10), "$n workers: pushed again");
	sleep 2;
	my $got = 0;
	for (1 .. 2 * $n) {
		my ($c3) = connection($t) or next;
		my ($st) = get($c3, "/hls/cam1/master.m3u8?$tok");
		$got++ if $st == 200;
		close $c3;
	}
	is($got, 2 * $n, "$n workers: entry manifests after the reload");
	@after = transcoders($media);
	is(scalar(@after), 1, "$n workers: one ffmpeg after the reload");
	@live = workers($t);
	my $pp = @after ? ppid_of($after[0]) : 0;
	ok((grep { $_ == $pp } @live), "$n workers: a child of a worker of the new generation");

	kill 'TERM', $pub;
	reap($pub, 5);
	ok(wait_until(sub { !transcoders($media) }, 10), "$n workers: no ffmpeg after the publisher left");
	$t->stop;
	ok(!transcoders($media), "$n workers: none after quit");
}

# The owner dies (SIGKILL, as a crash): its ffmpeg dies with it (PR_SET_PDEATHSIG) and the next
# request in another worker takes the claim over; one ffmpeg again. The transcode is started
# from a worker the publisher is not connected to, so that the stream outlives the kill.
{
	my $t = edge(2);
	my $media = "$t->{dir}/media";
	my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . "/relay/cam1?node=root-1&key=$nkey", secs => 120);
	ok(wait_until(sub { log_lines($t, qr/stream "cam1" copied from the worker/) }, 10), 'kill: published and copied');
	my ($pw) = map { /pid=(\d+)/ ? $1 : () } grep { /pid=$pub,/ } qx{ss -tnpH state established '( dport = :@{[$t->port(1)]} )' 2>/dev/null};
	my ($lport) = map { /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:@{[$t->port(1)]}/ ? $1 : () } grep { /pid=$pub,/ }
		qx{ss -tnpH state established '( dport = :@{[$t->port(1)]} )' 2>/dev/null};
	my ($holder) = map { /pid=(\d+)/ ? $1 : () } grep { /127\.0\.0\.1:$lport\s/ }
		qx{ss -tnpH state established '( sport = :@{[$t->port(1)]} )' 2>/dev/null};
	ok($holder, "kill: the publisher is in worker $holder");
	my $c;
	for (1 .. 40) {
		my $h;
		($c, $h) = connection($t);
		last if $h && $h != $holder;
		close $c if $c;
		undef $c;
	}
	ok($c, 'kill: a connection in the other worker');
	my ($s) = get($c, "/hls/cam1/master.m3u8?$tok");
	is($s, 200, 'kill: transcoding');
	close $c;
	my @ff = transcoders($media);
	is(scalar(@ff), 1, 'kill: one ffmpeg');
	my $owner = ppid_of($ff[0]);
	isnt($owner, $holder, "kill: owned by the worker without the publisher ($owner)");
	kill 'KILL', $owner;
	$t->allow_alert(qr/worker process $owner exited on signal 9/);
	ok(wait_until(sub { !kill 0, $ff[0] }, 5), 'kill: its ffmpeg died with it');
	my $got;
	ok(wait_until(sub {
		my ($c2) = connection($t) or return 0;
		($got) = get($c2, "/hls/cam1/master.m3u8?$tok");
		close $c2;
		$got == 200;
	}, 20), 'kill: entry manifests again');
	ok(log_lines($t, qr/transcode of stream "cam1" taken over from process $owner \(gone\)/), 'kill: the claim was taken over');
	sleep 2;
	is(scalar(transcoders($media)), 1, 'kill: one ffmpeg');
	kill 'TERM', $pub;
	reap($pub, 5);
	ok(wait_until(sub { !transcoders($media) }, 10), 'kill: none after the publisher left');
	$t->stop;
}

# Claims do not reach another nginx generation with its own zone (a binary upgrade, a zone of a
# new size): the lock file next to a stream's directory does. While another process holds it,
# no ffmpeg starts; once it lets go, one does.
{
	my $t = edge(2);
	my $media = "$t->{dir}/media";
	open my $lock, '>', "$media/.cam1.lock" or die;
	flock($lock, 2 | 4) or die 'flock';    # LOCK_EX | LOCK_NB
	my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . "/relay/cam1?node=root-1&key=$nkey", secs => 60);
	ok(wait_until(sub { log_lines($t, qr/stream "cam1" copied from the worker/) }, 10), 'lock: published and copied');
	my $pid = fork // die;
	if ($pid == 0) {
		close $lock;    # (the lock is the open file's: the parent's copy is what holds it)
		my ($c) = connection($t);
		my ($s) = get($c, "/hls/cam1/master.m3u8?$tok");
		POSIX::_exit($s == 200 ? 0 : 1);
	}
	ok(wait_until(sub { log_lines($t, qr/transcode of stream "cam1" waits: another process's ffmpeg still has its directory/) }, 5),
		'lock: the transcode waits for the other process');
	sleep 2;
	is(scalar(transcoders($media)), 0, 'lock: no ffmpeg while another process holds the directory');
	close $lock;
	is(reap($pid, 20), 0, 'lock: the held entry manifest is served once it lets go');
	is(scalar(transcoders($media)), 1, 'lock: one ffmpeg');
	kill 'TERM', $pub;
	reap($pub, 5);
	ok(wait_until(sub { !transcoders($media) }, 10), 'lock: none after the publisher left');
	$t->stop;
}

done_testing();
