package Mesh::Master;

# The reference master (dist/sbin/mesh-master) for tests: started on a free port with its own
# database, master secret and admin token; the admin API in a few calls; stopped, killed and
# started again on the same database. `nofile => N` starts it with an open-file limit of N.
# `tls => { cert => file, key => file, ca => file }` serves HTTPS (scripts/mesh-tls.sh makes the
# files); its admin calls then go through curl, verifying the master against `ca`.
# `auto_approve => 'ingest,relay'` (default 'all', so tests' nodes join; 'none' makes every
# new node wait for an admin's grant) is the master's --auto-approve.
# `node_key(ID)` is the key node ID signs with (derived from the secret as the master does);
# `node_call` sends a request signed as a node and checks the answer's signature.

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes ();
use Mesh::Test qw(free_port wait_until reap);

my $json = JSON::PP->new->canonical;
our $BINARY = $ENV{TEST_MESH_MASTER} || dirname($Mesh::Test::BINARY) . '/mesh-master';

sub has_binary { -x $BINARY }

sub new {
	my ($class, %opt) = @_;
	my $dir = tempdir('mesh-master-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{TEST_NGINX_LEAVE});
	my $self = bless { key => 'test-master-key', admin => 'test-admin-token', port => free_port(),
		dir => $dir, args => ['--auto-approve', $opt{auto_approve} // 'all', @{$opt{args} // []}], nofile => $opt{nofile}, tls => $opt{tls} }, $class;
	$self->start;
	return $self;
}

sub port { $_[0]{port} }
# The master secret (MASTER_KEY): no node is given it.
sub key { $_[0]{key} }

# The key of node ID (generation GEN, default 0): docs/protocol.md, "Node keys".
sub node_key {
	my ($self, $id, $gen) = @_;
	return hmac_sha256_hex("ngx_rtmp_mesh node key v1\n$id\n" . ($gen // 0), $self->{key});
}

sub nonce { join '', map { sprintf '%02x', int rand 256 } 1 .. 16 }

# A request signed as node NODE: METHOD, PATH?QUERY, BODY (a string or a reference to encode).
# Options: key (another key), nonce, ts. Returns { status, data, content, headers, nonce,
# sig_ok (the answer's signature verifies for this request with the node's key) }.
sub node_call {
	my ($self, $method, $pq, $node, $body, %opt) = @_;
	$body //= '';
	$body = $json->encode($body) if ref $body;
	my $ts = $opt{ts} // time;
	my $nonce = $opt{nonce} // nonce();
	my $key = $opt{key} // $self->node_key($node);
	my $sig = hmac_sha256_hex(join("\n", 'mesh-request-v2', $method, $pq, $ts, $nonce, sha256_hex($body)), $key);
	my $r = HTTP::Tiny->new(timeout => 10)->request($method, $self->url . $pq, {
		headers => { 'X-Mesh-Node' => $node, 'X-Mesh-Timestamp' => $ts, 'X-Mesh-Nonce' => $nonce,
			'X-Mesh-Signature' => $sig, ($body ne '' ? ('Content-Type' => 'application/json') : ()) },
		($body ne '' ? (content => $body) : ()) });
	my $content = $r->{content} // '';
	my $rts = $r->{headers}{'x-mesh-timestamp'} // '';
	my $rsig = $r->{headers}{'x-mesh-signature'} // '';
	my $want = hmac_sha256_hex(join("\n", 'mesh-response-v2', $r->{status}, $rts, $nonce, $method, $pq,
		sha256_hex($content)), $self->node_key($node));
	return { status => $r->{status}, content => $content, data => scalar(eval { $json->decode($content) }),
		headers => $r->{headers}, nonce => $nonce, ts => $ts, sig_ok => $rsig eq $want };
}
sub url { ($_[0]{tls} ? 'https' : 'http') . '://127.0.0.1:' . $_[0]{port} }
sub tls { $_[0]{tls} }
sub log { my ($self) = @_; open my $fh, '<', "$self->{dir}/master.log" or return ''; local $/; <$fh> }

sub start {
	my ($self) = @_;
	my $pid = fork // die "fork: $!";
	if ($pid == 0) {
		open STDOUT, '>>', "$self->{dir}/master.log" or die;
		open STDERR, '>&', \*STDOUT or die;
		$ENV{MASTER_KEY} = $self->{key};
		$ENV{ADMIN_TOKEN} = $self->{admin};
		my @limit = $self->{nofile} ? ('sh', '-c', 'ulimit -n ' . int($self->{nofile}) . ' && exec "$0" "$@"') : ();
		my $tls = $self->{tls};
		my @tls = $tls ? ('--tls-cert-file', $tls->{cert}, '--tls-key-file', $tls->{key}) : ();
		exec @limit, $BINARY, '--listen', "127.0.0.1:$self->{port}", '--db', "$self->{dir}/master.db",
			'--log-level', 'debug', @tls, @{$self->{args}};
		die "exec $BINARY: $!";
	}
	$self->{pid} = $pid;
	wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}") }, 10)
		or die "mesh-master did not start:\n" . $self->log;
	# The master takes no request signed in the second it started in (docs/protocol.md, the
	# checks in order): node_call's first request waits for the next one.
	my $second = time;
	Time::HiRes::sleep(0.02) while time == $second;
	return $self;
}

# SIGTERM (graceful) or, with `kill => 1`, SIGKILL.
sub stop {
	my ($self, %opt) = @_;
	return unless $self->{pid};
	kill $opt{kill} ? 'KILL' : 'TERM', $self->{pid};
	reap($self->{pid}, 10);
	delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

# An admin call: returns (status, decoded body or undef).
sub admin {
	my ($self, $method, $path, $body, %opt) = @_;
	my %h = ('Content-Type' => 'application/json');
	$h{Authorization} = "Bearer $self->{admin}" unless $opt{no_token};
	$h{Authorization} = "Bearer $opt{token}" if defined $opt{token};
	return $self->_curl($method, $path, $body, \%h) if $self->{tls};
	my $r = HTTP::Tiny->new(timeout => 10)->request($method, $self->url . $path,
		{ headers => \%h, (defined $body ? (content => $json->encode($body)) : ()) });
	my $data = eval { $json->decode($r->{content}) };
	return wantarray ? ($r->{status}, $data) : $data;
}

# An admin call over HTTPS with curl: the headers and body from files (no token in argv).
sub _curl {
	my ($self, $method, $path, $body, $h) = @_;
	my ($hf, $bf) = ("$self->{dir}/curl.headers", "$self->{dir}/curl.body");
	my $old = umask 077;
	open my $f, '>', $hf or die "$hf: $!";
	print $f map { "$_: $h->{$_}\n" } sort keys %$h;
	close $f;
	open $f, '>', $bf or die "$bf: $!";
	print $f defined $body ? $json->encode($body) : '';
	close $f;
	umask $old;
	my @data = defined $body ? ('--data-binary', "\@$bf") : ();
	open my $out, '-|', 'curl', '-s', '--max-time', '10', '--cacert', $self->{tls}{ca}, '-X', $method,
		'-H', "\@$hf", @data, '-w', '\n%{http_code}', $self->url . $path or die "curl: $!";
	my $text = do { local $/; <$out> } // '';
	close $out;
	my $status = $text =~ s/\n?(\d{3})\z// ? $1 : 599;
	my $data = eval { $json->decode($text) };
	return wantarray ? ($status, $data) : $data;
}

# A broadcaster's stream key for a new stream (and its account).
sub stream_key {
	my ($self, $stream, $account) = @_;
	$account //= 'acme';
	$self->admin('POST', '/admin/accounts', { name => $account });
	my ($st, $d) = $self->admin('POST', '/admin/streams', { stream => $stream, account => $account });
	die "stream $stream: $st" unless $st == 201;
	return $d->{key};
}

sub viewer_token {
	my ($self, $stream, $ttl) = @_;
	return $self->admin('POST', '/admin/tokens', { stream => $stream, ttl_s => $ttl // 3600 })->{token};
}

sub nodes { my ($self) = @_; my $d = $self->admin('GET', '/admin/nodes'); return { map { ($_->{node_id} => $_) } @{$d->{nodes} // []} } }
sub live { my ($self) = @_; return (scalar($self->admin('GET', '/admin/streams')) // {})->{live} // {} }

1;
