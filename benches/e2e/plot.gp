# gnuplot script of benches/e2e/run.sh: TCP throughput and CPU s/GB per scenario.
# Variables: csv (input), out (PNG), machine (title).
set terminal pngcairo size 1100,520 font ",10"
set output out
set datafile separator ","
set multiplot layout 1,2 title "vxsec end-to-end (".machine.")"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.7
set bmargin 8
set rmargin 8
set xtics rotate by -25 scale 0 font ",8"
set grid ytics
set key off
set title "TCP throughput (iperf3, reno)"
set ylabel "Gbit/s"
plot csv using 3:xtic(1) every ::1 lc rgb "#3a78b5"
set title "CPU seconds per GB moved (processes in the namespaces)"
set ylabel "CPU s / GB"
plot csv using 8:xtic(1) every ::1 lc rgb "#c0504d"
unset multiplot
