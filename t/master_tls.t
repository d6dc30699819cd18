#!/usr/bin/perl

# TLS to the master (docs/security.md, "TLS to the master"): with a private CA and a master
# certificate from scripts/mesh-tls.sh, the master serves HTTPS and nodes that verify it with
# mesh_master_ca announce, take their tables and admit a publish; a node given another CA is
# refused with one clear log line naming the master and its certificate; a plain-HTTP client on
# the TLS port gets a 400 saying so; connections that never finish a handshake are cut within
# the header timeout, while a real node goes on; the master refuses a key file others may read,
# and plain HTTP on an address that is not loopback unless --insecure-http; nginx -t checks
# mesh_master_ca in nginx's wording.

use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Select;
use lib 't/lib';
use Mesh::Test qw(wait_until log_lines publish reap free_port);
use Mesh::Master;
use Mesh::Node;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
plan(skip_all => 'no mesh-master (make dist)') unless Mesh::Master::has_binary();
plan(skip_all => 'no openssl') if system('command -v openssl >/dev/null 2>&1');
plan(skip_all => 'no curl') if system('command -v curl >/dev/null 2>&1');

my $dir = tempdir('mesh-tls-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
for my $which (qw(pki other)) {
	my $out = qx{bash scripts/mesh-tls.sh $dir/$which 2>&1};
	die "mesh-tls.sh: $out" if $?;
}
my %pki = (cert => "$dir/pki/master.pem", key => "$dir/pki/master.key", ca => "$dir/pki/ca.pem");
is((stat $pki{key})[2] & 07777, 0600, 'mesh-tls.sh: the master key is 0600');
is((stat "$dir/pki/ca.key")[2] & 07777, 0600, 'mesh-tls.sh: the CA key is 0600');

# --- the master refuses to start: an open key file, plain HTTP on a public address ---------------
sub master_exit {
	my ($env, @args) = @_;
	my $pid = open my $fh, '-|' // die "fork: $!";
	if ($pid == 0) {
		open STDERR, '>&', \*STDOUT or die;
		$ENV{MASTER_KEY} = 'k';
		$ENV{ADMIN_TOKEN} = 't';
		$ENV{$_} = $env->{$_} for keys %$env;
		exec $Mesh::Master::BINARY, '--db', "$dir/refused.db", @args or exit 127;
	}
	my $out = '';
	my $t0 = time;
	my $sel = IO::Select->new($fh);
	while (time - $t0 < 5 && $sel->can_read(5 - (time - $t0))) {
		sysread($fh, my $buf, 4096) or last;
		$out .= $buf;
	}
	if (kill 0, $pid) { kill 'TERM', $pid; $out .= "\n(still running)"; }
	close $fh;
	return ($? >> 8, $out);
}
{
	system('cp', $pki{key}, "$dir/open.key") == 0 or die;
	chmod 0644, "$dir/open.key";
	my ($st, $out) = master_exit({}, '--listen', '127.0.0.1:' . free_port(), '--tls-cert-file', $pki{cert},
		'--tls-key-file', "$dir/open.key");
	ok($st != 0 && $out =~ /key file "\Q$dir\E\/open.key" has mode 0644: .*chmod 600/, 'a key file others may read: refused, named')
		or diag("exit $st: $out");
	unlike($out, qr/BEGIN|PRIVATE/, 'and no key material in the message');
	my $port = free_port();
	($st, $out) = master_exit({}, '--listen', "0.0.0.0:$port");
	ok($st != 0 && $out =~ /refusing plain HTTP on 0.0.0.0:$port, which is not a loopback address: give --tls-cert-file/,
		'plain HTTP on a public address: refused') or diag("exit $st: $out");
	($st, $out) = master_exit({ TLS_CERT_FILE => $pki{cert} }, '--listen', "0.0.0.0:$port");
	ok($st != 0 && $out =~ /--tls-cert-file needs --tls-key-file/, 'a certificate without a key: refused') or diag($out);
	# --insecure-http says the operator knows: it starts (and is stopped here).
	($st, $out) = master_exit({}, '--listen', "0.0.0.0:$port", '--insecure-http');
	like($out, qr/plain HTTP: .*not encrypted/, '--insecure-http: starts, with a warning') or diag($out);
}

# --- the TLS master, and nodes that verify it --------------------------------------------------
my $master = Mesh::Master->new(tls => \%pki, args => [qw(--heartbeat-interval 1 --node-timeout 5 --header-timeout 2)]);
like($master->url, qr{^https://}, 'the master serves https');
like($master->log, qr/mesh-master ready.*scheme="?https/, 'it says so when ready');

sub node {
	my ($id, $role, $ca) = @_;
	my $t = Mesh::Node->under_master(id => $id, role => $role, master => $master,
		extra => "mesh_rtmp_url rtmp://127.0.0.1:%%PORT_1%%;\n    mesh_master_ca $ca;",
		apps => 'application ' . ($role eq 'ingest' ? 'live' : 'relay') . ' { mesh on; live on; }');
	$t->run;
	return $t;
}
my $ingest = node('ingest-1', 'ingest', $pki{ca});
my $edge = node('edge-1', 'relay', $pki{ca});
ok(wait_until(sub { my $n = $master->nodes; 2 == grep { $_->{alive} } values %$n }, 15), 'over HTTPS: two nodes announced and alive')
	or diag($ingest->error_log);
my $key = $master->stream_key('cam1');
ok(wait_until(sub { log_lines($ingest, qr/table version \d+ from master in force/) }, 10), 'over HTTPS: the ingest runs a table from the master');
my $pub = publish('rtmp://127.0.0.1:' . $ingest->port(1) . "/live/cam1?key=$key", secs => 30);
ok(wait_until(sub { exists $master->live->{cam1} }, 15), 'over HTTPS: a publish admitted (auth by the master) and live');
ok(wait_until(sub { log_lines($edge, qr/table version \d+ from master in force/) }, 10), 'over HTTPS: the edge runs a table too');

# --- a node with another CA: refused, one clear line --------------------------------------------
my $stranger = node('edge-2', 'relay', "$dir/other/ca.pem");
my $cert_line = qr/certificate of master "\Q${\ $master->url }\E" refused: .*\(check mesh_master_ca\)/;
ok(wait_until(sub { log_lines($stranger, $cert_line) }, 10), 'another CA: the node logs that the master\'s certificate is refused')
	or diag($stranger->error_log);
sleep 3;    # several retries
my @lines = log_lines($stranger, $cert_line);
my %per_link;
$per_link{$_}++ for map { /master (\w+) failed/ ? $1 : '?' } @lines;
ok($per_link{announce} && !grep({ $_ != 1 } values %per_link), 'once per link (' . join(', ', map { "$_: $per_link{$_}" } sort keys %per_link) . '), not once per retry')
	or diag(join "\n", @lines);
ok(!exists $master->nodes->{'edge-2'}, 'and it never reached the master');

# --- a plain-HTTP client on the TLS port ----------------------------------------------------------
my $plain = HTTP::Tiny->new(timeout => 5)->get('http://127.0.0.1:' . $master->port . '/healthz');
is($plain->{status}, 400, 'plain HTTP on the TLS port: 400');
like($plain->{content}, qr/speaks HTTPS/, 'saying why');

# --- connections that never handshake, or stop halfway, are cut like a slow header --------------
my $open = sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $master->port, Timeout => 2) };
my @silent = grep { defined } map { $open->() } 1 .. 50;
my @half = grep { defined } map { $open->() } 1 .. 20;
syswrite($_, "\x16\x03\x01\x00\xc8\x01\x00") for @half;    # the head of a ClientHello, never finished
my $t0 = time;
my %open = map { ($_ => $_) } @silent, @half;
while (%open && time - $t0 < 8) {
	for my $s (IO::Select->new(values %open)->can_read(0.5)) {
		my $n = sysread($s, my $buf, 4096);
		delete $open{$s} if !$n;
	}
}
my $took = time - $t0;
is(scalar keys %open, 0, sprintf('%d silent and %d half-handshaken connections all cut (in %.1f s)', scalar @silent, scalar @half, $took));
cmp_ok($took, '<', 4, 'within the header timeout (2 s), not held');
ok($master->nodes->{'edge-1'}{alive}, 'a real node stayed alive meanwhile');
my $text = do {
	my $h = "$dir/m.headers";
	open my $f, '>', $h or die;
	print $f "Authorization: Bearer test-admin-token\n";
	close $f;
	chmod 0600, $h;
	qx{curl -s --cacert $pki{ca} -H \@$h ${\ $master->url }/admin/metrics};
};
like($text, qr/^mesh_master_tls_handshakes_failed_total (\d+)$/m, 'failed handshakes are counted');
my ($failed) = $text =~ /^mesh_master_tls_handshakes_failed_total (\d+)$/m;
cmp_ok($failed // 0, '>=', 70, "as $failed (the connections cut, the stranger node's tries)");
like($text, qr/^mesh_master_plain_http_refused_total 1$/m, 'the plain-HTTP request is counted');

kill 'TERM', $pub;
reap($pub, 10);
$_->stop for $ingest, $edge, $stranger;
$master->stop;

# --- nginx -t and mesh_master_ca ----------------------------------------------------------------
my $t = Mesh::Test->new(name => 'conf');
my $cdir = $t->testdir;
$t->write_file('master.key', "k\n");
$t->write_file('nocert.pem', "hello\n");
system('cp', $pki{ca}, "$cdir/ca.pem") == 0 or die;
mkdir "$cdir/adir";
sub conf {
	my ($main) = @_;
	return "%%TEST_GLOBALS%%\nevents {}\nrtmp {\n    # main\n    mesh_node_id e1;\n    mesh_role relay;\n"
		. "    mesh_master_key_file master.key;\n    $main\n    %%TEST_GLOBALS_RTMP%%\n"
		. "    server {\n        listen 127.0.0.1:%%PORT_1%%;\n        application live { mesh on; live on; }\n    }\n}\n";
}
sub main_line {
	my @l = split /\n/, $t->read_file('nginx.conf');
	for my $i (0 .. $#l) { return $i + 1 if $l[$i] =~ /# main$/ }
	die "no marker";
}
for my $case (
	[ "mesh_master https://m:8443;\n    mesh_master_ca missing.pem;", qr/mesh_master_ca "\Q$cdir\E\/missing.pem": open\(\) failed \(2: No such file or directory\)/, 5 ],
	[ "mesh_master https://m:8443;\n    mesh_master_ca adir;", qr/mesh_master_ca "\Q$cdir\E\/adir": read\(\) failed \(21: Is a directory\)/, 5 ],
	[ "mesh_master https://m:8443;\n    mesh_master_ca nocert.pem;", qr/mesh_master_ca "\Q$cdir\E\/nocert.pem": no certificate in it/, 5 ],
	[ "mesh_master https://m:8443;\n    mesh_master_ca ca.pem;\n    mesh_master_ca ca.pem;", qr/"mesh_master_ca" directive is duplicate/, 6 ],
	[ "mesh_master http://127.0.0.1:8000;\n    mesh_master_ca ca.pem;", qr/"mesh_master_ca" needs an https:\/\/ "mesh_master"/, undef ],
	[ 'mesh_master_ca;', qr/invalid number of arguments in "mesh_master_ca" directive/, 4 ],
) {
	my ($main, $re, $line) = @$case;
	$t->write_file_expand('nginx.conf', conf($main));
	my ($ok, $out) = $t->test_config;
	(my $name = $main) =~ s/\n\s*/ /g;
	ok(!$ok, "nginx -t refuses: $name");
	my $where = defined $line ? main_line() + $line : '\d+';
	like($out, qr/\[emerg\] .*$re in \Q$cdir\E\/nginx.conf:$where$/m, "in nginx's words, with file:line: $name") or diag($out);
}
for my $case (
	[ "mesh_master https://m:8443;\n    mesh_master_ca ca.pem;", undef ],
	[ 'mesh_master https://m:8443;', undef ],
	[ 'mesh_master http://127.0.0.1:8000;', undef ],
	[ 'mesh_master http://[::1]:8000;', undef ],
	[ 'mesh_master http://master.example:8000;', qr/\[warn\] "mesh_master http:\/\/master.example:8000" is plain HTTP to another host: .*use https:\/\/ and "mesh_master_ca" in \Q$cdir\E\/nginx.conf:\d+/ ],
) {
	my ($main, $warn) = @$case;
	(my $name = $main) =~ s/\n\s*/ /g;
	$t->write_file_expand('nginx.conf', conf($main));
	my ($ok, $out) = $t->test_config;
	ok($ok, "nginx -t accepts: $name") or diag($out);
	if ($warn) {
		like($out, $warn, "and warns: $name");
	} else {
		unlike($out, qr/\[warn\].*plain HTTP/, "without a warning: $name");
	}
}

done_testing();
