#!/usr/bin/perl

# The module built against Debian's stock nginx (make stock) loads into /usr/sbin/nginx with
# libnginx-mod-rtmp, and admits a publish and a play there.

use strict;
use warnings;
use Cwd qw(abs_path);
use Test::More;
use lib 't/lib';
use Mesh::Test qw(sha256_hex publish publish_status probe wait_until log_lines reap);

my $nginx = '/usr/sbin/nginx';
my $rtmp = '/usr/lib/nginx/modules/ngx_rtmp_module.so';
my $mesh = abs_path('dist/stock/ngx_rtmp_mesh_module.so');

plan(skip_all => 'Debian nginx with libnginx-mod-rtmp and dist/stock (make stock) needed')
	unless -x $nginx && -f $rtmp && $mesh && -f $mesh;

my $t = Mesh::Test->new(name => 'stock', binary => $nginx, load => [ $rtmp, $mesh ]);
my $key = 'stock-key';
$t->write_file('table.json', qq({"publish": {"cam1": {"key_sha256": "@{[sha256_hex($key)]}"}}}));
$t->write_node_conf();

my ($ok, $out) = $t->test_config;
ok($ok, 'stock nginx -t loads the module') or diag($out);
like(qx{$nginx -v 2>&1}, qr{nginx/1\.22\.1}, 'it is Debian\'s nginx 1.22.1');

$t->run;
my $base = 'rtmp://127.0.0.1:' . $t->port(1) . '/live';
isnt(publish_status("$base/cam1?key=wrong"), 0, 'stock: wrong key refused');
ok(wait_until(sub { log_lines($t, qr/mesh: publish refused: .*wrong key/) }, 3), 'stock: refusal logged');
my $pub = publish("$base/cam1?key=$key", secs => 10);
my $got = probe("$base/cam1", secs => 2);
ok($got->{video} > 0 && $got->{audio} > 0, "stock: publish and play ($got->{video} video, $got->{audio} audio)");
reap($pub, 15);
$t->stop;

done_testing();
