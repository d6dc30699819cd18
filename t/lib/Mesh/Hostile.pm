package Mesh::Hostile;

# What t/adversarial.t, t/flood.t and t/redteam.t share: a node (under the fake master or on
# its own table) that runs with MALLOC_PERTURB_ (freed memory overwritten, so a use after free
# crashes instead of reading stale data), the raw RTMP client (t/lib/rtmp_fuzz.py) run in the
# foreground or the background, the worker's pid and resident memory, and the error log read
# from an offset.

use strict;
use warnings;

use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use Mesh::Test qw(wait_until);

use Exporter qw(import);
our @EXPORT_OK = qw(hostile_node run_perturbed client client_bg client_wait client_stop worker_pids rss_kb node_status
	log_mark log_since caps_supported);

our $CLIENT = dirname(__FILE__) . '/../rtmp_fuzz.py';
our $PERTURB = 165;
my @children;

# A node with `env MALLOC_PERTURB_;`, RTMP on PORT_1, mesh_status on PORT_2 (/status), and
# the caps of issue 10 when the binary has them (`caps => { mesh_auth_pending_max => 64 }`).
# Under `master` (its role from the table the master serves), with an auth timeout long enough
# for a slow master; without, from `table` in a file. `hls => 1` adds /hls/ (a media root, the
# transcoder reading `live`).
sub hostile_node {
	my (%o) = @_;
	my $t = Mesh::Test->new(name => $o{id});
	chmod 0777, $t->testdir;
	$t->write_file('table.json', $o{table} // '{"version": 0}');
	my $master = '';
	if (my $m = $o{master}) {
		$t->write_file('master.key', $m->node_key($o{id}) . "\n");
		my $timeout = $o{timeout} // '10s';
		$master = "    mesh_master @{[$m->url]};\n    mesh_master_key_file master.key;\n"
			. "    mesh_heartbeat_interval 1s;\n    mesh_poll_wait 3s;\n    mesh_master_timeout $timeout;\n";
	}
	my $apps = $o{apps} // 'application live { mesh on; live on; }';
	my $caps = '';
	if ($o{caps} && caps_supported()) {
		my %c = %{$o{caps}};
		$caps = join '', map { "    $_ $c{$_};\n" } sort keys %c;
	}
	my $status = 'location = /status { mesh_status; }';
	my $http = $o{hls}
		? $t->edge_http(mesh_ffmpeg => undef, renditions => [], mesh_segment => undef, mesh_manifest_wait => '3s',
			locations => $status)
		: "http {\n    access_log off;\n    server {\n        listen 127.0.0.1:%%PORT_2%%;\n        $status\n    }\n}\n";
	my $wc = $o{worker_connections} // 4096;
	$t->write_file_expand('nginx.conf', <<CONF);
%%TEST_GLOBALS%%
env MALLOC_PERTURB_;
worker_rlimit_nofile 20000;
events { worker_connections $wc; }
rtmp {
    %%TEST_GLOBALS_RTMP%%
    mesh_node_id $o{id};
    mesh_table_file table.json;
$master$caps    server {
        listen 127.0.0.1:%%PORT_1%%;
        $apps
    }
}
$http
CONF
	return $t;
}

# Start a node with freed memory perturbed (the worker keeps the variable: `env` above).
sub run_perturbed {
	my ($t) = @_;
	local $ENV{MALLOC_PERTURB_} = $PERTURB;
	return $t->run;
}

# Do the directives of issue 10's auth caps exist in this build? (nginx -t on a small config)
my $caps_supported;
sub caps_supported {
	return $caps_supported if defined $caps_supported;
	return $caps_supported = $ENV{MESH_TEST_CAPS} if defined $ENV{MESH_TEST_CAPS};
	my $t = Mesh::Test->new(name => 'caps-probe');
	$t->write_file_expand('nginx.conf', <<'CONF');
%%TEST_GLOBALS%%
events {}
rtmp {
    mesh_auth_pending_max 16;
    mesh_auth_pending_per_addr 4;
    server { listen 127.0.0.1:%%PORT_1%%; application live { mesh on; live on; } }
}
CONF
	my ($ok, $out) = $t->test_config;
	$caps_supported = $ok ? 1 : 0;
	diag('this build has no mesh_auth_pending_max / mesh_auth_pending_per_addr: the caps stay at '
		. 'their defaults, if any') unless $ok;
	return $caps_supported;
}

sub _decode_lines {
	my ($text) = @_;
	my @r;
	for (split /\n/, $text // '') {
		next unless /^\s*[\{\[]/;
		my $v = eval { decode_json($_) };
		push @r, $v if $v;
	}
	return @r;
}

# Run the client to the end; its JSON lines as a list of hashes.
sub client {
	my (@args) = @_;
	my $pid = open(my $fh, '-|') // die "fork: $!";
	if ($pid == 0) {
		open STDERR, '>', '/dev/null' unless $ENV{TEST_NGINX_VERBOSE};
		exec 'python3', '-B', $CLIENT, @args or POSIX::_exit(127);
	}
	local $/;
	my $out = <$fh>;
	close $fh;
	return _decode_lines($out);
}

# Start the client in the background with its output to `out` (a file); returns the pid.
sub client_bg {
	my ($out, @args) = @_;
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		open STDIN, '<', '/dev/null';
		open STDOUT, '>', $out or POSIX::_exit(126);
		open STDERR, '>', '/dev/null' unless $ENV{TEST_NGINX_VERBOSE};
		exec 'python3', '-B', $CLIENT, @args or POSIX::_exit(127);
	}
	push @children, $pid;
	return $pid;
}

# Wait for background clients (up to `secs` in all, then they are killed); the JSON lines of
# their output files.
sub client_wait {
	my ($secs, %jobs) = @_;    # pid => out file
	my $deadline = time + $secs;
	my %left = %jobs;
	while (%left && time < $deadline) {
		for my $pid (keys %left) {
			delete $left{$pid} if waitpid($pid, WNOHANG) != 0;
		}
		sleep 0.1 if %left;
	}
	for my $pid (keys %left) {
		kill 'KILL', $pid;
		waitpid $pid, 0;
		diag("client $pid still running after ${secs}s: killed");
	}
	my @r;
	for my $file (values %jobs) {
		open my $fh, '<', $file or next;
		local $/;
		push @r, _decode_lines(scalar <$fh>);
	}
	return @r;
}

# Stop background clients (TERM) and return the JSON lines they printed so far.
sub client_stop {
	my (%jobs) = @_;    # pid => out file
	kill 'TERM', keys %jobs;
	return client_wait(5, %jobs);
}

END { kill 'KILL', grep { kill 0, $_ } @children }

# The worker processes of a node (children of its master).
sub worker_pids {
	my ($t) = @_;
	my $master = $t->pid or return;
	my @w;
	for my $stat (glob '/proc/[0-9]*/stat') {
		open my $fh, '<', $stat or next;
		my $line = <$fh> // next;
		# pid (comm) state ppid ...
		push @w, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $master;
	}
	return sort { $a <=> $b } @w;
}

# Resident memory of a process in KiB (VmRSS), or undef.
sub rss_kb {
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return;
	while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)\s+kB/ }
	return;
}

# The node's mesh_status as a hash (PORT_2, /status).
sub node_status {
	my ($t) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->get('http://127.0.0.1:' . $t->port(2) . '/status');
	return $r->{success} ? decode_json($r->{content}) : undef;
}

# The error log's length now, and the lines written since such a mark.
sub log_mark { length $_[0]->error_log }
sub log_since {
	my ($t, $mark) = @_;
	my $log = $t->error_log;
	return split /\n/, substr($log, $mark > length $log ? 0 : $mark);
}

1;
