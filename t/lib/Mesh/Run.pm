package Mesh::Run;

# `make run`'s node: scripts/run-standalone.sh started from dist/ on free ports, what it prints
# read up to its "stop: Ctrl-C" line (what t/run.t and t/run_publish.t share).

use strict;
use warnings;

use IO::Socket::INET;
use Test::More;

use Mesh::Test qw(free_port wait_until reap);

sub require_dist {
	plan(skip_all => 'no dist/ (make dist)') unless -x 'dist/sbin/nginx' && -x 'dist/sbin/mesh-tool';
}

# Start the script; the node's RTMP `port`, what it printed (`text`) and the URLs in it:
# `publish` (the sample key's), `play` (with a token), `hls`.
sub start {
	my ($class) = @_;
	my $self = bless { port => free_port(), hport => free_port(), text => '' }, $class;
	$ENV{MESH_RTMP_PORT} = $self->{port};
	$ENV{MESH_HTTP_PORT} = $self->{hport};
	$self->{pid} = open($self->{out}, '-|', 'bash', 'scripts/run-standalone.sh') // die "run: $!";
	my $out = $self->{out};
	while (my $line = <$out>) {
		$self->{text} .= $line;
		$self->{publish} = $1 if $line =~ /'(rtmp:\/\/\S+\?key=\S+)'/;
		$self->{play} = $1 if $line =~ /ffplay '(rtmp:\/\/\S+\?token=\S+)'/;
		$self->{hls} = $1 if $line =~ /HLS:\s+(http:\/\/\S+)/;
		last if $line =~ /stop: Ctrl-C/;
	}
	return $self;
}

sub port { $_[0]{port} }
sub text { $_[0]{text} }
sub publish_url { $_[0]{publish} }
sub play_url { $_[0]{play} }
sub hls_url { $_[0]{hls} }

# Does the node take RTMP connections (within 5 s)?
sub listens {
	my ($self) = @_;
	return wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}") }, 5);
}

# QUIT (the script exec'd nginx in the foreground): a test that it stops.
sub stop {
	my ($self) = @_;
	kill 'QUIT', $self->{pid};
	ok(defined reap($self->{pid}, 10), 'node stops on QUIT');
	close $self->{out};
}

1;
