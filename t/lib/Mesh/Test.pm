package Mesh::Test;

# A small harness in the spirit of nginx-tests' Test::Nginx (which is not installable here):
# one object per nginx instance, each in its own test directory, ports picked free.
#
# Environment (as nginx-tests):
#   TEST_NGINX_BINARY   nginx to run (default: dist/sbin/nginx)
#   TEST_NGINX_MODULES  directory with ngx_rtmp_module.so and ngx_rtmp_mesh_module.so
#                       (default: ../modules beside the binary)
#   TEST_NGINX_GLOBALS  extra main-context directives for every test config
#   TEST_NGINX_LEAVE    keep the test directories
#   TEST_NGINX_VERBOSE  print what runs, and the error log of every instance stopped

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(rmtree);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Socket::IP;
use Fcntl qw(O_WRONLY O_CREAT O_EXCL);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use Exporter qw(import);
our @EXPORT_OK = qw(free_port publish publish_status probe wait_until log_lines sha256_hex
	viewer_token spawn reap transcoders);

my $top = abs_path(dirname(__FILE__) . '/../../..');
our $BINARY = $ENV{TEST_NGINX_BINARY} || "$top/dist/sbin/nginx";
our $MODULES = $ENV{TEST_NGINX_MODULES} || abs_path(dirname($BINARY) . '/../modules') || '';
our $TOOL = "$top/target/release/mesh-tool";
my $VERBOSE = $ENV{TEST_NGINX_VERBOSE};

my %used_ports;
my @instances;
my @spawned;

sub diagv { diag(@_) if $VERBOSE }

# A free TCP port (or the first of `count` in a row), never the same twice in one test file.
# Never from the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default), where
# it picks the local ports of outgoing connections (one may take the port between this probe
# and nginx's bind): from 20000-31999, starting at a slice of 200 derived from the process id
# (test files run in parallel rarely meet), each port probed free on INADDR_ANY and on [::] as
# nginx's `listen <port>` binds it, without SO_REUSEADDR (a port in TIME_WAIT is skipped too).
my ($PORT_LO, $PORT_HI, $SLICE) = (20000, 31999, 200);
my @EPHEMERAL = do {
	open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range';
	my @r = $fh ? split(' ', scalar <$fh>) : ();
	@r == 2 ? @r : (32768, 60999);
};
my $next_port = $PORT_LO + ($$ % int(($PORT_HI - $PORT_LO + 1) / $SLICE)) * $SLICE;

sub port_is_free {
	my ($port) = @_;
	return 0 if $port < $PORT_LO || $port > $PORT_HI || ($port >= $EPHEMERAL[0] && $port <= $EPHEMERAL[1]);
	my $s4 = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $port, Proto => 'tcp', ReuseAddr => 0)
		or return 0;
	my $s6 = IO::Socket::IP->new(LocalHost => '::', LocalPort => $port, Proto => 'tcp', ReuseAddr => 0, V6Only => 1);
	return 0 if !$s6 && $!{EADDRINUSE};    # no IPv6 here at all is fine
	return 1;
}

# Test files run side by side (`make test` runs two at a time): a port one has probed free but
# not bound yet is reserved in a file named after it, so another file's probe never takes it.
# A reservation whose process is gone is taken over; ours are removed when the file ends.
my $RESERVED = File::Spec->catdir(File::Spec->tmpdir, 'mesh-test-ports');
my (@reserved, $reserver);

sub reserve {
	my ($port) = @_;
	mkdir $RESERVED, 01777 unless -d $RESERVED;
	my $f = "$RESERVED/$port";
	for (1 .. 2) {
		if (sysopen(my $fh, $f, O_WRONLY | O_CREAT | O_EXCL, 0644)) {
			print $fh "$$\n";
			close $fh;
			push @reserved, $f;
			$reserver = $$;
			return 1;
		}
		return 0 unless $!{EEXIST};
		my $owner = do { open my $fh, '<', $f; $fh ? (scalar(<$fh>) // '') : '' };
		my ($pid) = $owner =~ /^(\d+)/;
		return 0 if $pid && (kill(0, $pid) || $!{EPERM});
		unlink $f;    # its process is gone
	}
	return 0;
}

sub free_port {
	my ($count) = @_;
	$count //= 1;
	for (1 .. $PORT_HI - $PORT_LO + 1) {
		my $port = $next_port;
		$next_port = $port + 1 > $PORT_HI ? $PORT_LO : $port + 1;
		next if $port + $count - 1 > $PORT_HI;
		next if grep { $used_ports{$_} || !port_is_free($_) } $port .. $port + $count - 1;
		my @got;
		for my $p ($port .. $port + $count - 1) { reserve($p) ? push(@got, $p) : last }
		if (@got < $count) {
			my %mine = map { ("$RESERVED/$_" => 1) } @got;
			unlink keys %mine;
			@reserved = grep { !$mine{$_} } @reserved;
			next;
		}
		$used_ports{$_} = 1 for $port .. $port + $count - 1;
		return $port;
	}
	die "no free port in $PORT_LO-$PORT_HI";
}

sub new {
	my ($class, %opts) = @_;
	my $dir = tempdir('mesh-test-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
	chmod 0755, $dir;
	mkdir "$dir/logs";
	my $self = bless { dir => $dir, name => $opts{name} || 'nginx', ports => {},
		binary => $opts{binary},
		load => $opts{load} || [ "$MODULES/ngx_rtmp_module.so", "$MODULES/ngx_rtmp_mesh_module.so" ] },
		$class;
	push @instances, $self;
	diagv("$self->{name}: $dir");
	return $self;
}

sub testdir { $_[0]{dir} }
sub name { $_[0]{name} }

# The port behind a placeholder number (like nginx-tests' port(8080)).
sub port {
	my ($self, $n) = @_;
	return $self->{ports}{$n} //= free_port();
}

sub has_binary { -x $BINARY && -f "$MODULES/ngx_rtmp_mesh_module.so" }

sub write_file {
	my ($self, $name, $content) = @_;
	my $path = "$self->{dir}/$name";
	open my $fh, '>', $path or die "write $path: $!";
	print $fh $content;
	close $fh;
	return $path;
}

# Expand %%TEST_GLOBALS%%, %%TEST_GLOBALS_RTMP%%, %%MODULES%%, %%TESTDIR%% and %%PORT_N%%.
sub expand {
	my ($self, $content) = @_;
	my $dir = $self->{dir};
	my $globals = "pid $dir/nginx.pid;\nerror_log $dir/error.log notice;\n"
		. join('', map { "load_module $_;\n" } @{$self->{load}})
		. ($ENV{TEST_NGINX_GLOBALS} // '');
	my $rtmp = "log_format mesh '\$remote_addr \$command \"\$app\" \"\$name\" \$bytes_received';\n"
		. "    access_log $dir/rtmp_access.log mesh;";
	$content =~ s/%%TEST_GLOBALS%%/$globals/g;
	$content =~ s/%%TEST_GLOBALS_RTMP%%/$rtmp/g;
	$content =~ s/%%MODULES%%/$MODULES/g;
	$content =~ s/%%TESTDIR%%/$dir/g;
	$content =~ s/%%PORT_(\d+)%%/$self->port($1)/ge;
	return $content;
}

sub write_file_expand {
	my ($self, $name, $content) = @_;
	return $self->write_file($name, $self->expand($content));
}

# The usual node: one RTMP server on PORT_1 holding `apps` (default: a `live` application with
# `mesh on`), our rtmp{}-level directives in `rtmp` (default: the table file table.json), an
# optional `http` block, and main-level lines in `main` (worker_processes, rtmp_auto_push), all
# through expand().
sub write_node_conf {
	my ($self, %o) = @_;
	my $rtmp = $o{rtmp} // 'mesh_table_file table.json;';
	my $apps = $o{apps} // 'application live { mesh on; live on; }';
	my $http = $o{http} // '';
	my $main = $o{main} // '';
	return $self->write_file_expand('nginx.conf', <<CONF);
%%TEST_GLOBALS%%
$main
events {}
rtmp {
    %%TEST_GLOBALS_RTMP%%
    $rtmp
    server {
        listen 127.0.0.1:%%PORT_1%%;
        $apps
    }
}
$http
CONF
}

# A media root the workers can write to, under the test directory.
sub media_dir {
	my ($self) = @_;
	my $media = "$self->{dir}/media";
	mkdir $media;
	chmod 0777, $media;
	return $media;
}

# An edge's http{} block, as text for write_node_conf's `http`: `access_log off;`, a media root
# the workers can write to (media_dir), /usr/bin/ffmpeg reading this node's `live`
# application, the source rendition, 1 s segments, a 15 s manifest wait, and a server on
# PORT_2 with `location /hls/`. Options:
#   <directive> => value   sets, adds or (undef) leaves out an http-level directive
#                          (mesh_segment => '2s', mesh_ffmpeg => undef, access_log => ...)
#   renditions => [...]    the mesh_rendition lines, in order (default ['source']; [] for none)
#   listen => [...]        the server's addresses (default ['127.0.0.1']), each on PORT_2
#   dash => 1              `location /dash/` too
#   head => '...'          http-level text before the directives (log_format, include, types)
#   locations => '...'     more locations in the server
#   servers => '...'       more servers
# (text options are indented to their level, line by line)
sub edge_http {
	my ($self, %o) = @_;
	my %opt = map { $_ => delete $o{$_} } grep { exists $o{$_} } qw(renditions listen dash head locations servers);
	my %d = (access_log => 'off', mesh_ffmpeg => '/usr/bin/ffmpeg',
		mesh_rtmp_source => 'rtmp://127.0.0.1:%%PORT_1%%/live', mesh_segment => '1s', mesh_manifest_wait => '15s', %o);
	$d{mesh_media_root} = $self->media_dir unless exists $d{mesh_media_root};
	my @first = grep { defined $d{$_} } qw(access_log mesh_media_root mesh_ffmpeg mesh_rtmp_source);
	my %first = map { $_ => 1 } @first;
	my @rest = grep { !$first{$_} && defined $d{$_} } sort keys %d;
	my $line = sub { "    $_[0] $_[1];\n" };
	my $dirs = join '', (map { $line->($_, $d{$_}) } @first),
		(map { $line->('mesh_rendition', $_) } @{$opt{renditions} // ['source']}),
		(map { $line->($_, $d{$_}) } @rest);
	my $indent = sub { my ($text, $n) = @_; defined $text ? join('', map { (' ' x $n) . "$_\n" } split /\n/, $text) : '' };
	my $head = $indent->($opt{head}, 4);
	my $dash = $opt{dash} ? "        location /dash/ { mesh_media dash; }\n" : '';
	my $locations = $indent->($opt{locations}, 8);
	my $servers = $indent->($opt{servers}, 4);
	my $listen = join '', map { "        listen $_:%%PORT_2%%;\n" } @{$opt{listen} // ['127.0.0.1']};
	return "http {\n$head$dirs    server {\n$listen        location /hls/ { mesh_media hls; }\n$dash$locations    }\n"
		. "$servers}\n";
}

# A standalone node's table file (table.json): its viewer secret and the publish keys
# (stream => key).
sub write_standalone_table {
	my ($self, $secret, %keys) = @_;
	my $publish = join ', ', map { qq("$_": {"key_sha256": ") . sha256_hex($keys{$_}) . '"}' } sort keys %keys;
	return $self->write_file('table.json',
		qq({"role": "standalone", "viewer_secret": "$secret", "publish": {$publish}}));
}

sub _nginx {
	my ($self, @args) = @_;
	my $bin = $self->{binary} || $BINARY;
	my @cmd = ($bin, '-p', "$self->{dir}/", '-c', 'nginx.conf', '-e', "$self->{dir}/error.log", @args);
	diagv("run: @cmd");
	return @cmd;
}

# Run `nginx -t`; returns (ok, output).
sub test_config {
	my ($self) = @_;
	my @cmd = $self->_nginx('-t');
	my $out = qx{@cmd 2>&1};
	return ($? == 0, $out);
}

sub run {
	my ($self) = @_;
	my @cmd = $self->_nginx();
	my $out = qx{@cmd 2>&1};
	if ($?) {
		die "$self->{name}: nginx failed to start:\n$out\n" . $self->read_file('error.log');
	}
	$self->{running} = 1;
	for my $port (values %{$self->{ports}}) {
		wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }, 5)
			if $self->{listens}{$port} // 1;
	}
	return $self;
}

sub pid {
	my ($self) = @_;
	my $pid = $self->read_file('nginx.pid') or return;
	chomp $pid;
	return $pid;
}

sub read_file {
	my ($self, $name) = @_;
	open my $fh, '<', "$self->{dir}/$name" or return '';
	local $/;
	return <$fh>;
}

sub error_log { $_[0]->read_file('error.log') }

# A log line the test causes on purpose (nginx logs [alert] for a child killed by a signal).
sub allow_alert {
	my ($self, $re) = @_;
	push @{$self->{allowed}}, $re;
}

# Reload with the configuration as it is on disk now.
sub reload {
	my ($self) = @_;
	my @cmd = $self->_nginx('-s', 'reload');
	system(@cmd) == 0 or die "reload failed";
}

# Stop gracefully (QUIT; `fast => 1`: TERM), then check the error log for alerts, crits and
# crashed workers. nginx-rtmp keeps a graceful shutdown going while RTMP clients stay
# connected: stop publishers and players first.
sub stop {
	my ($self, %opt) = @_;
	return unless $self->{running};
	$self->{running} = 0;
	my $pid = $self->pid;
	if ($pid) {
		kill $opt{fast} ? 'TERM' : 'QUIT', $pid;
		unless (wait_until(sub { !kill(0, $pid) }, 10)) {
			kill 'TERM', $pid;
			wait_until(sub { !kill(0, $pid) }, 5) or kill 'KILL', $pid;
			fail("$self->{name}: nginx stopped on QUIT within 10 s");
		}
	}
	my $log = $self->error_log;
	diag("$self->{name} error.log:\n$log") if $VERBOSE;
	my @bad = grep { /\[(alert|crit|emerg)\]|exited on signal/ } split /\n/, $log;
	for my $re (@{$self->{allowed} // []}) {
		@bad = grep { !/$re/ } @bad;
	}
	is(join("\n", @bad), '', "$self->{name}: no alerts or crashes in the error log");
}

END {
	unlink @reserved if $reserver && $$ == $reserver;    # not from a forked child
	kill 'KILL', grep { kill 0, $_ } @spawned;
	for my $t (@instances) {
		next unless $t->{running};
		my $pid = $t->pid or next;
		kill 'QUIT', $pid;
	}
}

# Lines of an error log matching a pattern.
sub log_lines {
	my ($t, $re) = @_;
	return grep { /$re/ } split /\n/, $t->error_log;
}

# Poll `cond` until it is true or `secs` pass; returns the last value.
sub wait_until {
	my ($cond, $secs) = @_;
	my $deadline = time + $secs;
	while (1) {
		my $v = $cond->();
		return $v if $v;
		return $v if time > $deadline;
		sleep 0.1;
	}
}

sub spawn {
	my (@cmd) = @_;
	diagv("spawn: @cmd");
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		open STDIN, '<', '/dev/null';
		unless ($VERBOSE) { open STDOUT, '>', '/dev/null'; open STDERR, '>', '/dev/null'; }
		exec @cmd or POSIX::_exit(127);
	}
	push @spawned, $pid;
	return $pid;
}

# Wait for a spawned process up to `secs`; returns its exit status, or undef if still running.
sub reap {
	my ($pid, $secs) = @_;
	my $status;
	wait_until(sub {
		my $r = waitpid($pid, WNOHANG);
		$status = $? >> 8 if $r == $pid;
		return $r == $pid || $r == -1;
	}, $secs // 0);
	return $status;
}

my @FFMPEG_IN = ('-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=25', '-f', 'lavfi',
	'-i', 'sine=frequency=440');
my @FFMPEG_OUT = ('-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '25',
	'-c:a', 'aac', '-f', 'flv');

# Start an ffmpeg publisher in the background (`secs` seconds of test video); returns its pid.
# `playpath` sets the stream name (and args) verbatim, for names a URL cannot carry.
sub publish {
	my ($url, %opt) = @_;
	my @pp = defined $opt{playpath} ? ('-rtmp_playpath', $opt{playpath}) : ();
	return spawn('ffmpeg', '-nostdin', '-loglevel', 'error', @FFMPEG_IN, '-t', $opt{secs} // 30,
		@FFMPEG_OUT, @pp, $url);
}

# Publish for `secs` and return ffmpeg's exit status (refused publishes exit non-zero at once).
sub publish_status {
	my ($url, %opt) = @_;
	my $secs = $opt{secs} // 2;
	my $pid = publish($url, %opt, secs => $secs);
	my $st = reap($pid, $secs + 10);
	unless (defined $st) { kill 'KILL', $pid; waitpid $pid, 0; }
	return $st;
}

# Read `secs` seconds of a stream with ffprobe; returns { video => n, audio => n, ok => bool }.
sub probe {
	my ($url, %opt) = @_;
	my $secs = $opt{secs} // 2;
	my $limit = $opt{timeout} // 15;
	my @cmd = ('timeout', $limit, 'ffprobe', '-v', 'error', '-rw_timeout', '5000000',
		'-read_intervals', "%+$secs", '-show_entries', 'packet=codec_type', '-of', 'csv=p=0');
	push @cmd, '-rtmp_playpath', $opt{playpath} if defined $opt{playpath};
	diagv("probe: @cmd $url");
	my $pid = open my $fh, '-|' // die "fork: $!";
	if ($pid == 0) {
		open STDERR, '>', '/dev/null' unless $VERBOSE;
		exec @cmd, $url or POSIX::_exit(127);
	}
	my %n = (video => 0, audio => 0);
	while (<$fh>) { chomp; s/,.*//; $n{$_}++ if exists $n{$_}; }
	close $fh;
	$n{ok} = $? == 0;
	return \%n;
}

# The pids of the ffmpeg processes whose command line names `dir` (a node's transcoders write
# under its media root: `dir` is the root, or a stream's directory in it).
sub transcoders {
	my ($dir) = @_;
	return grep { (qx{cat /proc/$_/cmdline 2>/dev/null} // '') =~ /\Q$dir\E/ } map { /^(\d+)$/ ? $1 : () } qx{pgrep -x ffmpeg};
}

sub sha256_hex {
	my ($s) = @_;
	require Digest::SHA;
	return Digest::SHA::sha256_hex($s);
}

# A viewer token: "<expiry>.<hex HMAC-SHA256(secret, stream \n expiry)>".
sub viewer_token {
	my ($secret, $stream, $expiry) = @_;
	require Digest::SHA;
	return "$expiry." . Digest::SHA::hmac_sha256_hex("$stream\n$expiry", $secret);
}

1;
