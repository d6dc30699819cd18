#!/usr/bin/perl
# No rollback, and master epochs (docs/protocol.md, "Epochs"), on a real node: a master (the
# fake one, which can be made to go back) sends a table older than the one in force, of the
# same epoch: refused, the node keeps its table and its file; a new epoch is taken whatever
# its version (the node asks from 0 for it), saved with the table, and after a restart of the
# node its versions still never go back.

use strict;
use warnings;

use Test::More;

use lib 't/lib';
use Mesh::Test qw(log_lines wait_until);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $master = Mesh::FakeMaster->new;
$master->set_epoch('e1');
$master->set_table('edge-1', { version => 5, epoch => 'e1', role => 'relay' });
my $t = Mesh::Node->under_master(id => 'edge-1', role => 'relay', master => $master,
	extra => 'mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;', apps => 'application relay { mesh on; live on; }');
$t->run;
ok(wait_until(sub { log_lines($t, qr/mesh: table version 5 from master in force/) }, 10), 'v5 of epoch e1 in force');
ok(wait_until(sub { $t->read_file('table.json') =~ /"epoch":\s*"e1"/ }, 5), 'saved with its epoch');

# The master goes back: v3 of the same epoch.
$master->rollback(1);
$master->set_table('edge-1', { version => 3, epoch => 'e1', role => 'relay' });
ok(wait_until(sub { log_lines($t, qr/mesh: table version 3 from master refused: older than version 5 in force \(no rollback\)/) }, 10),
	'an older table of the same epoch: refused');
is(scalar(log_lines($t, qr/table version 3 from master refused/)), 1, 'logged once');
like($t->read_file('table.json'), qr/"version":\s*5/, 'the table file keeps v5');
ok(!log_lines($t, qr/table version 3 from master in force/), 'v3 never in force');
$master->rollback(0);

# A new database: epoch e2, its versions from anew.
$master->clear;
$master->set_epoch('e2');
$master->set_table('edge-1', { version => 2, epoch => 'e2', role => 'relay' });
ok(wait_until(sub { log_lines($t, qr/mesh: table version 2 from master in force \(was 5\)/) }, 10), 'v2 of epoch e2 taken');
ok(log_lines($t, qr/mesh: master epoch e2 \(was e1\): a new master database/), 'the new epoch said');
ok((grep { $_->{path} =~ /[?&]since=0(&|$)/ } @{$master->requests('streams')}), 'asked from version 0');
ok(wait_until(sub { $t->read_file('table.json') =~ /"epoch":\s*"e2"/ }, 5), 'saved with the new epoch');

# After a restart the node runs the saved table, epoch and all: an older one of e2 is refused.
$t->stop;
$master->rollback(1);
$master->set_table('edge-1', { version => 1, epoch => 'e2', role => 'relay' });
$t->run;
ok(wait_until(sub { log_lines($t, qr/mesh: table version 1 from master refused: older than version 2 in force \(no rollback\)/) }, 10),
	'after a restart, the saved epoch and version hold: an older table refused');
$master->rollback(0);
$t->stop;
done_testing();
