#!/usr/bin/perl

# The shipped examples (conf/*.conf with conf/tables/*.json, as assembled in dist/) pass
# `nginx -t`, and none of them logs keys: an rtmp log_format without $args, and an error log
# level above info (nginx-rtmp logs every command's args at info).

use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use lib 't/lib';
use Mesh::Test;

plan(skip_all => 'no dist/ (make dist)') unless -x 'dist/sbin/nginx';

my $dist = abs_path('dist');
my @confs = map { s{.*/}{}r } glob('conf/*.conf');
ok(@confs >= 4, 'examples for every role and standalone: ' . join(' ', @confs));

for my $conf (@confs) {
	my $out = qx{$dist/sbin/nginx -p $dist/ -c conf/$conf -t 2>&1};
	is($?, 0, "$conf: nginx -t") or diag($out);
	open my $fh, '<', "conf/$conf" or die;
	my $text = do { local $/; <$fh> };
	like($text, qr/^\s*access_log\s+\S+\s+mesh;/m, "$conf: access_log uses the mesh format");
	unlike($text, qr/log_format[^;]*\$args/s, "$conf: no \$args in the log format");
	unlike($text, qr/^\s*error_log\s+\S+\s+(info|debug);/m, "$conf: error log not at info/debug");
}

for my $table (glob('conf/tables/*.json')) {
	my $out = qx{$dist/sbin/mesh-tool check $table 2>&1};
	is($?, 0, "$table: valid") or diag($out);
}

done_testing();
