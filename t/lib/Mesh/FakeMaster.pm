package Mesh::FakeMaster;

# Perl side of t/lib/fake_master.py: start it on a free port, script it, read what it saw.

use strict;
use warnings;

use File::Basename qw(dirname);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use Mesh::Test qw(free_port spawn wait_until reap);

my $script = dirname(__FILE__) . '/../fake_master.py';
my $json = JSON::PP->new->canonical;

sub new {
	my ($class, %opt) = @_;
	my $self = bless { key => $opt{key} // 'test-master-key', port => $opt{port} // free_port() }, $class;
	$self->start;
	return $self;
}

sub port { $_[0]{port} }
sub key { $_[0]{key} }
# The fake master takes one key from every node.
sub node_key { $_[0]{key} }
sub url { 'http://127.0.0.1:' . $_[0]{port} }

sub start {
	my ($self) = @_;
	$self->{pid} = spawn('python3', $script, '--port', $self->{port}, '--key', $self->{key});
	wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}") }, 10)
		or die "fake master did not start";
	return $self;
}

sub stop {
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	reap($self->{pid}, 5);
	delete $self->{pid};
}

sub control {
	my ($self, $what, $data) = @_;
	my $r = HTTP::Tiny->new(timeout => 10)->post($self->url . "/_control/$what",
		{ content => $json->encode($data // {}), headers => { 'Content-Type' => 'application/json' } });
	die "control $what: $r->{status} $r->{content}" unless $r->{success};
	return $json->decode($r->{content});
}

sub set_table { my ($self, $node, $table) = @_; $self->control('table', { node_id => $node, table => $table }) }
sub set_role { my ($self, $node, $role) = @_; $self->control('role', { node_id => $node, role => $role }) }
sub set_auth { my ($self, $stream, %a) = @_; $self->control('auth', { stream => $stream, %a }) }
sub set_route { my ($self, $stream, %r) = @_; $self->control('route', { stream => $stream, %r }) }
sub fault { my ($self, $endpoint, $mode, $secs) = @_; $self->control('fault', { endpoint => $endpoint, mode => $mode, secs => $secs // 0 }) }
sub clear { $_[0]->control('clear') }
sub set_epoch { my ($self, $e) = @_; $self->control('epoch', { epoch => $e }) }
sub rollback { my ($self, $on) = @_; $self->control('rollback', { on => $on ? JSON::PP::true : JSON::PP::false }) }
# The answer for streams without their own set_auth (allow, reason, ttl_s, delay, delay_max).
sub set_auth_default { my ($self, %a) = @_; $self->control('auth_default', \%a) }
# Answer auth questions one at a time (each waits for the one before): a slow master.
sub auth_serial { my ($self, $on) = @_; $self->control('auth_serial', { on => $on ? JSON::PP::true : JSON::PP::false }) }
# How many requests to `endpoint` (default auth) it received, for streams starting with `prefix`.
sub count { my ($self, %o) = @_; $self->control('count', { endpoint => $o{endpoint} // 'auth', prefix => $o{prefix} // '' })->{n} }

# Requests seen, optionally only those to one endpoint.
sub requests {
	my ($self, $endpoint) = @_;
	my $all = $self->control('requests');
	return [ grep { !defined $endpoint || $_->{endpoint} eq $endpoint } @$all ];
}

sub DESTROY { $_[0]->stop }

1;
