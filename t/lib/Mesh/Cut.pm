package Mesh::Cut;

# A path that can be cut: a TCP relay from a port of ours to a node's port, in a child process.
# `freeze` cuts it as a dropped link does: nothing is forwarded either way any more, every
# connection stays open (no FIN, no RST), and new connections are taken (the kernel's backlog
# answers a connect, as a host behind a dead route would not; the node behind it answers anyone
# else). `thaw` lets bytes flow again. Signals carry the orders (USR1 freeze, USR2 thaw); the
# child leaves with POSIX::_exit (no destructor of the test's objects runs in it).

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use POSIX qw(_exit);

# Mesh::Cut->new(listen => $port, to => $port): the relay runs once `new` returns.
sub new {
	my ($class, %o) = @_;
	my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $o{listen}, Listen => 16,
		ReuseAddr => 1, Proto => 'tcp') or die "listen $o{listen}: $!";
	my $pid = fork() // die "fork: $!";
	if (!$pid) {
		my $frozen = 0;
		local $SIG{USR1} = sub { $frozen = 1 };
		local $SIG{USR2} = sub { $frozen = 0 };
		local $SIG{TERM} = sub { _exit(0) };
		my %peer;    # fileno → the socket at the other end
		my %sock;    # fileno → socket
		my $sel = IO::Select->new($ls);
		while (1) {
			if ($frozen) {
				select(undef, undef, undef, 0.05);
				next;
			}
			my @ready = $sel->can_read(0.05);
			for my $fh (@ready) {
				if ($fh == $ls) {
					my $c = $ls->accept or next;
					my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $o{to}, Proto => 'tcp');
					if (!$u) { close $c; next; }
					@peer{fileno $c, fileno $u} = ($u, $c);
					@sock{fileno $c, fileno $u} = ($c, $u);
					$sel->add($c, $u);
					next;
				}
				my $other = $peer{fileno $fh} or next;
				my $n = sysread($fh, my $buf, 65536);
				if (!$n) {
					for my $s ($fh, $other) {
						$sel->remove($s);
						delete $peer{fileno $s};
						delete $sock{fileno $s};
						close $s;
					}
					next;
				}
				# Blocking write: the other end is a local nginx that reads.
				my $off = 0;
				while ($off < $n) {
					my $w = syswrite($other, $buf, $n - $off, $off);
					last unless defined $w;
					$off += $w;
				}
			}
		}
	}
	close $ls;
	return bless { pid => $pid }, $class;
}

sub freeze { kill 'USR1', $_[0]{pid} }
sub thaw { kill 'USR2', $_[0]{pid} }

sub stop {
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

1;
