#!/usr/bin/perl
# Verify the message on stdin with Mail::DKIM, taking public keys from a file of
# "<selector>._domainkey.<domain> <TXT value>" lines instead of DNS.
# Prints one line per signature: algorithm, selector, result, detail (tab-separated).
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS;

my ($keys_file) = @ARGV;
my %keys;
open my $fh, '<', $keys_file or die "cannot open $keys_file: $!";
while (my $line = <$fh>) {
    chomp $line;
    my ($name, $value) = split / /, $line, 2;
    $keys{lc $name} = $value;
}
close $fh;

{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($domain, $type) = @_;
        my $value = $keys{lc $domain};
        if (!defined $value) {
            $@ = 'NXDOMAIN';
            return ();
        }
        my @strings = $value =~ /(.{1,255})/gs;
        return (Net::DNS::RR->new(name => $domain, type => 'TXT', txtdata => [@strings]));
    };
}

my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) {
    $line =~ s/\015?\012\z/\015\012/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
foreach my $sig ($dkim->signatures) {
    print join("\t", $sig->algorithm, $sig->selector, $sig->result, $sig->result_detail // ''), "\n";
}
