#!/usr/bin/perl

# Files only their owner can read, in a daemonized run (nginx sets umask 0 when it daemonizes):
# the table a master sent (viewer secret, hop keys) saved 0600; the media root the node makes
# and each stream's directory 0750; playlists, manifests and segments 0640; all owned by the
# worker's user.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap viewer_token);
use Mesh::FakeMaster;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $secret = 'files-viewer-secret';
my $master = Mesh::FakeMaster->new;
$master->set_table('edge-1', { version => 1, role => 'relay', viewer_secret => $secret,
	relay => { cam1 => [ { node_id => 'edge-1', node_url => 'rtmp://127.0.0.1:1/relay', node_key => 'k-r1-e1-cam1' } ] } });
# A media root the node makes itself, in a directory the worker may write to.
my $parent = tempdir('mesh-media-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
chmod 0777, $parent;
my $root = "$parent/media";
my $edge = Mesh::Node->under_master(id => 'edge-1', master => $master,
	apps => 'application relay { mesh on; live on; }', hls => { mesh_media_root => $root });
like($edge->read_file('nginx.conf'), qr/^(?!.*daemon off)/s, 'nginx daemonizes (no "daemon off")');
$edge->run;

# The worker (the master may still be starting it when its ports answer).
my $worker;
wait_until(sub {
	($worker) = grep { (qx{cat /proc/$_/cmdline 2>/dev/null} // '') =~ /worker process/ } map { /^(\d+)$/ ? $1 : () } qx{pgrep -P @{[$edge->pid]}};
	$worker;
}, 5);
ok($worker, 'a worker runs');
my $status = qx{cat /proc/$worker/status};
my ($wuid) = $status =~ /^Uid:\s+(\d+)/m;
my ($umask) = $status =~ /^Umask:\s+(\d+)/m;
is($umask, '0000', 'the worker runs with umask 0 (daemonized)');

sub mode { my @s = stat($_[0]) or return 'missing'; sprintf('%04o', $s[2] & 07777) }
sub owner { my @s = stat($_[0]) or return -1; $s[4] }

# The table from the master, saved.
my $table = $edge->testdir . '/table.json';
ok(wait_until(sub { log_lines($edge, qr/table version 1 from master in force/) && ($edge->read_file('table.json') =~ /"version":\s*1/) }, 10),
	'the table from the master saved');
like($edge->read_file('table.json'), qr/\Q$secret\E/, 'it holds the viewer secret');
is(mode($table), '0600', 'saved table: 0600');
is(owner($table), $wuid, "owned by the worker's user ($wuid)");
opendir(my $d, $edge->testdir) or die;
is(join(',', grep { /\.tmp$/ } readdir $d), '', 'no temporary file left');

# A transcode: directories and files.
my $rtmp = 'rtmp://127.0.0.1:' . $edge->port(1) . '/relay';
my $http = 'http://127.0.0.1:' . $edge->port(2);
my $push = publish("$rtmp/cam1?node=root-1&key=k-r1-e1-cam1", secs => 120);
ok(wait_until(sub { log_lines($edge, qr/publish accepted: stream "cam1" from root-1/) }, 10), 'stream pushed in');
my $tok = 'token=' . viewer_token($secret, 'cam1', int(time) + 3600);
my $ua = HTTP::Tiny->new(timeout => 30);
ok(wait_until(sub { $ua->get("$http/hls/cam1/master.m3u8?$tok")->{status} == 200 }, 20), 'transcoding');
ok(wait_until(sub { glob("$root/cam1/chunk-*.m4s") }, 10), 'segments written');

is(mode($root), '0750', 'media root (made by the node): 0750');
is(owner($root), $wuid, "media root owned by the worker's user");
is(mode("$root/cam1"), '0750', 'stream directory: 0750');
is(owner("$root/cam1"), $wuid, "stream directory owned by the worker's user");
my @files = grep { !/\.tmp$/ } glob("$root/cam1/*");
ok(@files >= 5, scalar(@files) . ' files: ' . join(' ', map { s{.*/}{}r } @files[0 .. 4]));
my @bad = map { (s{.*/}{}r) . ' ' . mode($_) } grep { mode($_) ne '0640' || owner($_) != $wuid } @files;
is(join(', ', @bad), '', "every playlist, manifest and segment 0640, owned by the worker's user");
ok(scalar(grep { /master\.m3u8$/ } @files) && scalar(grep { /manifest\.mpd$/ } @files) && scalar(grep { /init-0\.m4s$/ } @files),
	'(playlists, manifest and init segments among them)');

kill 'TERM', $push;
reap($push, 5);
$edge->stop;
done_testing();
