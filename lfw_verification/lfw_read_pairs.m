function [path1, path2, issame, fold] = lfw_read_pairs(filename)
%LFW_READ_PAIRS  Read an official LFW pairs.txt or the seed's pair.label (same rules as data_tools/pairs.py).
%   pairs.txt: header 'FOLDS<TAB>PER_FOLD' (or one number = one fold), then per fold PER_FOLD lines
%   'name i j' (same) and PER_FOLD lines 'name1 i name2 j' (different); an integer index i means
%   name/name_%04d.jpg, any other field name/field. Fold of the k-th pair (0-based): floor(k / (2*PER_FOLD)).
%   pair.label: 'LABEL path1 path2' with LABEL 1 (same) or 0; fold = floor(k * 10 / number of pairs).
%   Fields are tab-separated when the line holds a tab, else whitespace-separated. Blank lines and lines
%   starting with '#' are skipped.
text = fileread(filename);
lines = regexp(text, '\r\n|\n|\r', 'split');
lines = lines(:);
trimmed = strtrim(lines);
keep = ~cellfun('isempty', trimmed) & cellfun('isempty', regexp(trimmed, '^#', 'once'));
lines = lines(keep);
if isempty(lines)
    error('lfw_read_pairs:empty', 'pairs file %s is empty', filename);
end
% one canonical form: fields joined by single tabs
has_tab = ~cellfun('isempty', strfind(lines, sprintf('\t')));
lines(has_tab) = regexprep(regexprep(lines(has_tab), '[ \f\v]*\t[ \f\v]*', '\t'), '^[ \f\v]+|[ \f\v]+$', '');
lines(~has_tab) = regexprep(strtrim(lines(~has_tab)), '\s+', '\t');
fields = regexp(lines, '\t', 'split');
n_fields = cellfun('length', fields);

if n_fields(1) <= 2 && all(is_int(fields{1}))
    header = str2double(fields{1});
    if numel(header) == 1
        header = [1 header];
    end
    fields = fields(2:end);
    n_fields = n_fields(2:end);
    n = numel(fields);
    if n ~= header(1) * 2 * header(2)
        error('lfw_read_pairs:count', '%s: header promises %d pairs, found %d', filename, header(1) * 2 * header(2), n);
    end
    bad = find(n_fields ~= 3 & n_fields ~= 4, 1);
    if ~isempty(bad)
        error('lfw_read_pairs:line', '%s: pair %d: expected "name i j" or "name1 i name2 j"', filename, bad);
    end
    issame = n_fields == 3;
    name1 = field(fields, 1);
    index1 = field(fields, 2);
    name2 = name1;
    index2 = name1;
    index2(issame) = field(fields(issame), 3);
    name2(~issame) = field(fields(~issame), 3);
    index2(~issame) = field(fields(~issame), 4);
    path1 = lfw_path(name1, index1);
    path2 = lfw_path(name2, index2);
    fold = floor((0:n - 1)' / (2 * header(2)));
else
    n = numel(fields);
    label = field(fields, 1);
    bad = find(n_fields ~= 3 | ~(strcmp(label, '0') | strcmp(label, '1')), 1);
    if ~isempty(bad)
        error('lfw_read_pairs:line', '%s: pair %d: expected "LABEL path1 path2" with LABEL 0 or 1', filename, bad);
    end
    issame = strcmp(label, '1');
    path1 = field(fields, 2);
    path2 = field(fields, 3);
    fold = floor((0:n - 1)' * 10 / n);
end
end

function values = field(fields, k)
values = cellfun(@(f) f{k}, fields, 'UniformOutput', false);
end

function tf = is_int(values)
tf = ~cellfun('isempty', regexp(values, '^[0-9]+$', 'once'));
end

function paths = lfw_path(names, indices)
%name/name_%04d.jpg for integer indices, name/index otherwise
paths = strcat(names, '/', indices);
numeric = is_int(indices);
numbers = str2double(indices(numeric));
padded = regexp(sprintf('%04d\n', numbers), '\n', 'split');
paths(numeric) = strcat(names(numeric), '/', names(numeric), '_', padded(1:end - 1)', '.jpg');
end
