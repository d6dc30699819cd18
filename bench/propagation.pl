#!/usr/bin/perl

# Benchmark 4: propagation. A table change at the (fake) master → the push it asks for started
# at a running node (the target's listener accepts the connection), through the long poll.
# Each round swaps the one ingest target for a new one; p50 / p99 over the rounds.
#
#   perl bench/propagation.pl [rounds]        (default 50)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Test::More;    # the harness reports through it
use Mesh::Test qw(free_port publish wait_until log_lines reap sha256_hex);
use Mesh::FakeMaster;
use Mesh::Node;

my $rounds = shift // 50;
my $master = Mesh::FakeMaster->new;
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => free_port(), Listen => 64, ReuseAddr => 1) or die;
my $tport = $listen->sockport;
my $t = Mesh::Node->under_master(id => 'ingest-1', role => 'ingest', master => $master);
$t->run;
my $version = 1;
my $table = sub {
	my ($target) = @_;
	$master->set_table('ingest-1', { version => $version++, role => 'ingest',
		publish => { cam1 => { key_sha256 => sha256_hex('k1') } },
		ingest => { cam1 => [ $target ? { node_id => $target, node_url => "rtmp://127.0.0.1:$tport/relay", node_key => "k-$target" } : () ] } });
};
$table->(undef);
wait_until(sub { log_lines($t, qr/table version 1 from master in force/) }, 10) or die "no table";
my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . '/live/cam1?key=k1', secs => 600);
wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 10) or die "no publish";
sleep 1;

my $sel = IO::Select->new($listen);
my (@ms, @held);
for my $i (1 .. $rounds) {
	# Drop what is pending from the round before.
	while ($sel->can_read(0)) { my $c = $listen->accept; close $c if $c; }
	@held = ();
	my $t0 = time;
	$table->("root-$i");
	my $t1;
	while (!$t1 && time - $t0 < 30) {
		next unless $sel->can_read(1);
		my $c = $listen->accept or next;
		push @held, $c;    # held open: the push waits in its handshake until the next round
		$t1 = time;
	}
	die "round $i: no push within 30 s" unless $t1;
	push @ms, ($t1 - $t0) * 1000;
	sleep 0.2;
}
kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
my @s = sort { $a <=> $b } @ms;
my $pct = sub { $s[int($_[0] * $#s + 0.5)] };
printf "| propagation (%d table changes, long poll) | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|\n", scalar @s;
printf "| fake master table change → push connected at the node | %.1f | %.1f | %.1f |\n", $pct->(0.5), $pct->(0.99), $s[-1];
done_testing();
