#!/usr/bin/perl

# A reload with a stream live on a node of several workers, from a table file, with
# `rtmp_auto_push`: the broadcaster stays on its old worker, and the workers of the new
# generation — which take every new connection — get a copy of the stream too (nginx-rtmp
# copies a stream only to the workers alive when it was published; the module makes it reach
# the ones that came after). So every viewer who arrives after the reload plays, on whichever
# worker the kernel gives it.

use strict;
use warnings;
use Test::More;
use POSIX ();
use lib 't/lib';
use Mesh::Test qw(publish probe wait_until log_lines reap);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no ss') unless -x '/usr/bin/ss' || -x '/bin/ss';

my $key = 'stream-key-7';
my $sha = Mesh::Test::sha256_hex($key);
my $t = Mesh::Test->new(name => 'reload');
$t->write_file('table.json', qq({"version": 3, "publish": {"cam1": {"key_sha256": "$sha"}}}));
my $sock = "$t->{dir}/sock";
mkdir $sock;
chmod 0777, $sock;
$t->write_node_conf(main => qq{
    worker_processes 2;
    rtmp_auto_push on;
    rtmp_socket_dir $sock;
}, rtmp => q{
    mesh_node_id solo;
    mesh_role standalone;
    mesh_table_file table.json;
}, apps => q{
    application live { mesh on; live on; }
});
$t->run;
my $port = $t->port(1);
my $base = "rtmp://127.0.0.1:$port";

sub workers { my $m = $t->pid; return sort split ' ', `pgrep -P $m` }
sub conn_pids {
	my %pids = map { /pid=(\d+)/ ? ($1 => 1) : () } qx{ss -tnpH state established '( sport = :$port )' 2>/dev/null};
	return keys %pids;
}

my $pub = publish("$base/live/cam1?key=$key", secs => 120);
ok(wait_until(sub { log_lines($t, qr/stream "cam1" copied from the worker it is published on/) }, 8), 'live, copied into the other worker');
my @old = workers();
is(scalar @old, 2, 'two workers');

$t->reload;
my @new;
ok(wait_until(sub { @new = grep { my $w = $_; !grep { $_ == $w } @old } workers(); @new == 2 }, 10), 'a new generation of two workers')
	or diag("old @old, now " . join(' ', workers()));
ok(kill(0, $pub), 'the broadcaster stays');

# Viewers in waves until both new workers served some; each must play.
my (%served, $viewers, $played) = ();
for my $wave (1 .. 5) {
	my @kids;
	for (1 .. 6) {
		my $pid = fork // die "fork: $!";
		if ($pid == 0) {
			my $r = probe("$base/live/cam1", secs => 3, timeout => 12);
			POSIX::_exit($r->{video} > 0 ? 0 : 1);
		}
		push @kids, $pid;
	}
	sleep 2;
	$served{$_} = 1 for grep { my $p = $_; grep { $_ == $p } @new } conn_pids();
	for my $k (@kids) {
		waitpid($k, 0);
		$viewers++;
		$played++ if $? == 0;
	}
	last if keys %served >= 2;
}
is($played // 0, $viewers, 'every viewer after the reload played (' . ($played // 0) . " of $viewers)");
cmp_ok(scalar(keys %served), '>=', 2, 'served by both new workers (' . join(' ', sort keys %served) . ')');
ok(log_lines($t, qr/copied from the worker it is published on/) >= 3, 'the new workers took copies');

kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
done_testing();
