package Mesh::Watch;

# A viewer that keeps watching: ffprobe reads a stream and prints every packet as it arrives;
# a child stamps each with the wall clock into a file. The test reads the gaps afterwards, and
# whether the player was ever disconnected (ffprobe ended before the test stopped it).
# The child leaves with POSIX::_exit: a plain exit would run the destructors of the test's
# objects it inherited (its nodes and master), stopping them all when the player ends.

use strict;
use warnings;
use POSIX qw(WNOHANG _exit);
use Time::HiRes qw(time);
use File::Temp qw(tempfile);

sub new {
	my ($class, $url, %opt) = @_;
	my ($fh, $file) = tempfile('mesh-watch-XXXXXX', TMPDIR => 1, UNLINK => 1);
	close $fh;
	my $pid = fork() // die "fork: $!";
	if (!$pid) {
		setpgrp(0, 0);
		open(my $out, '>', $file) or _exit(1);
		$out->autoflush(1);
		# rw_timeout long: a gap in the feed must not end the player; only the server can.
		open(my $in, '-|', 'ffprobe', '-v', 'error', '-rw_timeout', 120_000_000,
			'-show_entries', 'packet=codec_type', '-of', 'csv=p=0', $url) or _exit(1);
		while (my $l = <$in>) {
			printf $out "%.3f %s", time, $l;
		}
		printf $out "%.3f end\n", time;
		close $out;
		_exit(0);
	}
	return bless { pid => $pid, file => $file, started => time }, $class;
}

# [time, kind] of every packet so far; kind "end" when the player was disconnected.
sub stamps {
	my ($self) = @_;
	open(my $in, '<', $self->{file}) or return [];
	my @s = map { chomp; [split / /, $_, 2] } <$in>;
	return \@s;
}

sub video_since {
	my ($self, $t) = @_;
	return scalar grep { $_->[0] >= $t && $_->[1] =~ /^video/ } @{$self->stamps};
}

# Was the player disconnected (its ffprobe ended)?
sub ended {
	my ($self) = @_;
	return 1 if grep { $_->[1] eq 'end' } @{$self->stamps};
	return waitpid($self->{pid}, WNOHANG) == $self->{pid} ? 1 : 0;
}

# The longest time without a video packet from `from` on (to the last packet).
sub longest_gap {
	my ($self, $from) = @_;
	my @t = map { $_->[0] } grep { $_->[1] =~ /^video/ && $_->[0] >= $from } @{$self->stamps};
	my ($gap, $prev) = (0, $from);
	for my $t (@t) {
		$gap = $t - $prev if $t - $prev > $gap;
		$prev = $t;
	}
	return $gap;
}

sub stop {
	my ($self) = @_;
	kill 'TERM', -$self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
}

sub DESTROY {
	my ($self) = @_;
	kill 'KILL', -$self->{pid} if $self->{pid} && kill 0, $self->{pid};
}

1;
