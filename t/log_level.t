#!/usr/bin/perl

# `mesh on` with an error log at info or debug: `nginx -t` warns (nginx-rtmp logs publish and
# play arguments, stream keys and viewer tokens among them, at those levels); at notice, or with
# the mesh off, it does not.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Mesh::Test;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();

my $t = Mesh::Test->new(name => 'loglevel');
my $dir = $t->testdir;
$t->write_file('table.json', '{"version": 1}');
my $load = join '', map { "load_module $_;\n" } "$Mesh::Test::MODULES/ngx_rtmp_module.so", "$Mesh::Test::MODULES/ngx_rtmp_mesh_module.so";

sub check {
	my ($name, $logs, $mesh) = @_;
	$t->write_file_expand('nginx.conf', "${load}pid $dir/nginx.pid;\n$logs\nevents {}\nrtmp {\n"
		. "    mesh_table_file table.json;\n    server {\n        listen 127.0.0.1:%%PORT_1%%;\n"
		. "        application live { mesh $mesh; live on; }\n        application other { live on; }\n    }\n}\n");
	my ($ok, $out) = $t->test_config;
	ok($ok, "$name: the configuration is good (a warning only)") or diag($out);
	return $out;
}

my $warn = qr/\[warn\] "mesh on" with error log level "(\w+)": publish and play arguments \(stream keys, viewer tokens\) are logged at this level, use "notice" or above in \Q$dir\E\/nginx\.conf:\d+/;
my $out = check('info', "error_log $dir/error.log info;", 'on');
like($out, $warn, 'info: warned, where') or diag($out);
is(($out =~ $warn)[0], 'info', 'names the level');
is(scalar(() = $out =~ /"mesh on" with error log level/g), 1, 'once');

$out = check('debug', "error_log $dir/error.log notice;\nerror_log $dir/debug.log debug;", 'on');
is(($out =~ $warn)[0], 'debug', 'a second error log at debug: warned') or diag($out);

$out = check('notice', "error_log $dir/error.log notice;", 'on');
unlike($out, qr/"mesh on" with error log level/, 'notice: no warning');
$out = check('mesh off', "error_log $dir/error.log info;", 'off');
unlike($out, qr/"mesh on" with error log level/, 'mesh off: no warning');

done_testing();
