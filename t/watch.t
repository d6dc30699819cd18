#!/usr/bin/perl

# Without a master, an edited mesh_table_file is loaded again (validated off the event loop,
# swapped whole): a revoked key drops its publisher, a new key publishes, a role change drops
# the viewers the new role refuses, and a bad edit is refused with the last good table kept.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep);
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status probe wait_until log_lines reap spawn);

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $t = Mesh::Test->new(name => 'standalone');
sub table { my ($v, $key, $role) = @_; $role //= 'standalone';
	qq({"version": $v, "role": "$role", "publish": {"cam1": {"key_sha256": "@{[sha256_hex($key)]}"}}}) }
$t->write_file('table.json', table(1, 'k1'));
$t->write_node_conf(rtmp => q{
    mesh_node_id solo;
    mesh_table_file table.json;
});
$t->run;
my $base = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';

my $p1 = publish("$base/cam1?key=k1", secs => 60);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'k1 publishes');

# Revoke k1, allow k2: the running publisher is dropped.
$t->write_file('table.json', table(2, 'k2'));
ok(wait_until(sub { log_lines($t, qr/table version 2 from ".*table.json" in force/) }, 5), 'edit loaded');
ok(wait_until(sub { log_lines($t, qr/mesh: publish dropped: app "live", stream "cam1", from 127.0.0.1: wrong key \(table version 2\)/) }, 5),
	'revoked key: publisher dropped');
ok(defined reap($p1, 10), 'revoked key: the publisher was disconnected');
my $p2 = publish("$base/cam1?key=k2", secs => 60);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) >= 2 }, 5), 'new key publishes');

# A bad edit is refused; the table in force stays.
$t->write_file('table.json', '{"version": 3, "publish": ');
ok(wait_until(sub { log_lines($t, qr/mesh_table_file ".*table.json" refused: invalid table: line 1, column \d+: .*; keeping table version 2/) }, 5),
	'bad edit refused');
ok(!defined reap($p2, 2), 'bad edit: the publisher is undisturbed');
isnt(publish_status("$base/cam9?key=k2"), 0, 'bad edit: the table in force still decides');

# A viewer plays; the node becomes an ingest: the viewer goes, the broadcaster stays.
my $viewer = spawn('ffprobe', '-v', 'error', '-rw_timeout', '30000000', '-read_intervals', '%+40',
	'-show_entries', 'packet=codec_type', '-of', 'csv=p=0', "$base/cam1");
sleep 2;
$t->write_file('table.json', table(4, 'k2', 'ingest'));
ok(wait_until(sub { log_lines($t, qr/mesh: play dropped: app "live", stream "cam1", from 127.0.0.1: wrong role \(table version 4\)/) }, 5),
	'role change: viewer dropped');
ok(defined reap($viewer, 10), 'role change: the viewer was disconnected');
ok(!defined reap($p2, 1), 'role change: the broadcaster stays (ingest takes broadcasters)');

kill 'TERM', $p2;
reap($p2, 5);
$t->stop;
done_testing();
