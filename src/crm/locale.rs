//! Names, addresses, phone numbers and national ids in the three locales of
//! the example CRM: Chinese, Lithuanian and English (GB, US, IE).

use rand::seq::SliceRandom;
use rand::Rng;

use super::calendar::Date;

/// The cultural background a generated customer's data follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locale {
    /// Chinese names and addresses in China (CN).
    Chinese,
    /// Lithuanian names and addresses in Lithuania (LT).
    Lithuanian,
    /// English names and addresses in GB, US or IE.
    English,
}

/// Sex used to pick gendered name forms (and national-id digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sex {
    /// Female name forms.
    Female,
    /// Male name forms.
    Male,
}

/// The locale-specific part of a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Person {
    pub(crate) first_name: &'static str,
    pub(crate) last_name: &'static str,
    /// ASCII `first.last` for e-mail addresses.
    pub(crate) email_name: String,
    pub(crate) phone: String,
    pub(crate) national_id: String,
    pub(crate) street: String,
    pub(crate) city: &'static str,
    pub(crate) postal_code: String,
    pub(crate) country: &'static str,
}

impl Locale {
    /// Picks a locale: 40 % English, 30 % Chinese, 30 % Lithuanian.
    pub(crate) fn pick(rng: &mut impl Rng) -> Locale {
        match rng.gen_range(0..10) {
            0..=3 => Locale::English,
            4..=6 => Locale::Chinese,
            _ => Locale::Lithuanian,
        }
    }

    /// Generates a person of this locale born on `born`.
    pub(crate) fn person(self, rng: &mut impl Rng, sex: Sex, born: Date) -> Person {
        match self {
            Locale::Chinese => chinese(rng, sex, born),
            Locale::Lithuanian => lithuanian(rng, sex, born),
            Locale::English => english(rng, sex),
        }
    }

    /// The language code most customers of this locale prefer.
    pub(crate) fn language(self) -> &'static str {
        match self {
            Locale::Chinese => "zh",
            Locale::Lithuanian => "lt",
            Locale::English => "en",
        }
    }

    /// Values a customer of this locale may give as ethnicity.
    pub(crate) fn ethnicities(self) -> &'static [&'static str] {
        match self {
            Locale::Chinese => &["Han", "Han", "Han", "Hui", "Zhuang", "Manchu"],
            Locale::Lithuanian => &["Lithuanian", "Lithuanian", "Polish", "Russian"],
            Locale::English => &[
                "White British",
                "White Irish",
                "Black Caribbean",
                "Asian Indian",
                "Hispanic",
                "Mixed",
            ],
        }
    }
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    match items.choose(rng) {
        Some(item) => *item,
        None => unreachable!("name tables are never empty"),
    }
}

fn digits(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

// ---------------------------------------------------------------- Chinese

/// (surname, pinyin)
const CN_SURNAMES: &[(&str, &str)] = &[
    ("王", "wang"),
    ("李", "li"),
    ("张", "zhang"),
    ("刘", "liu"),
    ("陈", "chen"),
    ("杨", "yang"),
    ("黄", "huang"),
    ("赵", "zhao"),
    ("吴", "wu"),
    ("周", "zhou"),
    ("徐", "xu"),
    ("孙", "sun"),
    ("马", "ma"),
    ("朱", "zhu"),
    ("胡", "hu"),
    ("郭", "guo"),
    ("林", "lin"),
    ("罗", "luo"),
];
const CN_MALE: &[(&str, &str)] = &[
    ("伟", "wei"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("杰", "jie"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("志强", "zhiqiang"),
    ("建华", "jianhua"),
];
const CN_FEMALE: &[(&str, &str)] = &[
    ("芳", "fang"),
    ("娜", "na"),
    ("秀英", "xiuying"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("艳", "yan"),
    ("娟", "juan"),
    ("霞", "xia"),
    ("秀兰", "xiulan"),
    ("桂英", "guiying"),
    ("婷", "ting"),
];

/// A Chinese city: name, districts, postal code base, ID area code.
struct CnCity {
    name: &'static str,
    districts: &'static [&'static str],
    postal_base: u32,
    area_code: &'static str,
}

const CN_CITIES: &[CnCity] = &[
    CnCity {
        name: "北京市",
        districts: &["朝阳区", "海淀区", "东城区", "西城区"],
        postal_base: 100_000,
        area_code: "110105",
    },
    CnCity {
        name: "上海市",
        districts: &["浦东新区", "徐汇区", "静安区", "黄浦区"],
        postal_base: 200_000,
        area_code: "310115",
    },
    CnCity {
        name: "广州市",
        districts: &["天河区", "越秀区", "海珠区"],
        postal_base: 510_000,
        area_code: "440106",
    },
    CnCity {
        name: "深圳市",
        districts: &["南山区", "福田区", "罗湖区"],
        postal_base: 518_000,
        area_code: "440305",
    },
    CnCity {
        name: "成都市",
        districts: &["武侯区", "锦江区", "青羊区"],
        postal_base: 610_000,
        area_code: "510107",
    },
    CnCity {
        name: "杭州市",
        districts: &["西湖区", "上城区", "拱墅区"],
        postal_base: 310_000,
        area_code: "330106",
    },
];
const CN_ROADS: &[&str] = &[
    "建国路",
    "人民路",
    "解放路",
    "中山路",
    "长安街",
    "和平路",
    "新华路",
    "文化路",
];

fn chinese(rng: &mut impl Rng, sex: Sex, born: Date) -> Person {
    let (last_name, last_pinyin) = pick(rng, CN_SURNAMES);
    let names = if sex == Sex::Female {
        CN_FEMALE
    } else {
        CN_MALE
    };
    let (first_name, first_pinyin) = pick(rng, names);
    let city = &CN_CITIES[rng.gen_range(0..CN_CITIES.len())];
    let street = format!(
        "{}{}{}号",
        pick(rng, city.districts),
        pick(rng, CN_ROADS),
        rng.gen_range(1..300)
    );
    Person {
        first_name,
        last_name,
        email_name: format!("{first_pinyin}.{last_pinyin}"),
        phone: format!(
            "+86 13{} {} {}",
            digits(rng, 1),
            digits(rng, 4),
            digits(rng, 4)
        ),
        national_id: chinese_id(city.area_code, born, sex, rng),
        street,
        city: city.name,
        postal_code: (city.postal_base + rng.gen_range(0..100) * 10).to_string(),
        country: "CN",
    }
}

/// An 18-character resident identity number with a valid ISO 7064 check.
fn chinese_id(area: &str, born: Date, sex: Sex, rng: &mut impl Rng) -> String {
    let (y, m, d) = born.civil();
    let parity = if sex == Sex::Male { 1 } else { 0 };
    let sequence = rng.gen_range(0..500) * 2 + parity;
    let body = format!("{area}{y:04}{m:02}{d:02}{sequence:03}");
    let check = chinese_id_check(&body);
    format!("{body}{check}")
}

/// Weighted digit sum of `body`.
fn weighted_sum(body: &str, weights: impl IntoIterator<Item = u32>) -> u32 {
    body.bytes()
        .zip(weights)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum()
}

/// The ISO 7064 MOD 11-2 check character of a 17-digit id body.
fn chinese_id_check(body: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    b"10X98765432"[(weighted_sum(body, WEIGHTS) % 11) as usize] as char
}

// ------------------------------------------------------------- Lithuanian

const LT_MALE: &[&str] = &[
    "Jonas",
    "Petras",
    "Antanas",
    "Tomas",
    "Mindaugas",
    "Darius",
    "Andrius",
    "Vytautas",
    "Mantas",
    "Lukas",
    "Žygimantas",
];
const LT_FEMALE: &[&str] = &[
    "Ona", "Rūta", "Jurgita", "Asta", "Laura", "Eglė", "Giedrė", "Rasa", "Inga", "Aušra",
];
/// (male form, female form)
const LT_SURNAMES: &[(&str, &str)] = &[
    ("Kazlauskas", "Kazlauskienė"),
    ("Jankauskas", "Jankauskienė"),
    ("Petrauskas", "Petrauskienė"),
    ("Stankevičius", "Stankevičienė"),
    ("Vasiliauskas", "Vasiliauskienė"),
    ("Žukauskas", "Žukauskienė"),
    ("Butkus", "Butkienė"),
    ("Paulauskas", "Paulauskienė"),
    ("Urbonas", "Urbonienė"),
    ("Kavaliauskas", "Kavaliauskienė"),
];
/// (city, first postal digits)
const LT_CITIES: &[(&str, &str)] = &[
    ("Vilnius", "0"),
    ("Kaunas", "4"),
    ("Klaipėda", "9"),
    ("Šiauliai", "7"),
    ("Panevėžys", "3"),
];
const LT_STREETS: &[&str] = &[
    "Žirmūnų g.",
    "Gedimino pr.",
    "Laisvės al.",
    "Savanorių pr.",
    "Vilniaus g.",
    "Taikos pr.",
    "Ąžuolyno g.",
    "Šilo g.",
];

fn lithuanian(rng: &mut impl Rng, sex: Sex, born: Date) -> Person {
    let (first_name, last_name) = match sex {
        Sex::Male => (pick(rng, LT_MALE), pick(rng, LT_SURNAMES).0),
        Sex::Female => (pick(rng, LT_FEMALE), pick(rng, LT_SURNAMES).1),
    };
    let (city, postal_prefix) = pick(rng, LT_CITIES);
    let house = rng.gen_range(1..120);
    let street = match rng.gen_range(0..3) {
        0 => format!("{} {house}-{}", pick(rng, LT_STREETS), rng.gen_range(1..60)),
        _ => format!("{} {house}", pick(rng, LT_STREETS)),
    };
    Person {
        first_name,
        last_name,
        email_name: ascii_fold(&format!("{first_name}.{last_name}")),
        phone: format!("+370 6{} {}", digits(rng, 2), digits(rng, 5)),
        national_id: lithuanian_id(born, sex, rng),
        street,
        city,
        postal_code: format!("LT-{postal_prefix}{}", digits(rng, 4)),
        country: "LT",
    }
}

/// Lowercases and drops the diacritics of our Latin-script names:
/// "Žukauskienė" → "zukauskiene", "Seán" → "sean".
fn ascii_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c.to_lowercase().next().unwrap_or(c) {
            'ą' | 'á' => 'a',
            'č' => 'c',
            'ę' | 'ė' | 'é' => 'e',
            'į' => 'i',
            'š' => 's',
            'ų' | 'ū' => 'u',
            'ž' => 'z',
            other => other,
        })
        .collect()
}

/// An 11-digit personal code (asmens kodas) with a valid check digit.
fn lithuanian_id(born: Date, sex: Sex, rng: &mut impl Rng) -> String {
    let (y, m, d) = born.civil();
    let century_sex = match (y >= 2000, sex) {
        (false, Sex::Male) => 3,
        (false, Sex::Female) => 4,
        (true, Sex::Male) => 5,
        (true, Sex::Female) => 6,
    };
    let body = format!("{century_sex}{:02}{m:02}{d:02}{}", y % 100, digits(rng, 3));
    let check = lithuanian_id_check(&body);
    format!("{body}{check}")
}

/// The check digit of a 10-digit Lithuanian personal code body.
fn lithuanian_id_check(body: &str) -> u32 {
    match weighted_sum(body, [1, 2, 3, 4, 5, 6, 7, 8, 9, 1]) % 11 {
        10 => match weighted_sum(body, [3, 4, 5, 6, 7, 8, 9, 1, 2, 3]) % 11 {
            10 => 0,
            s => s,
        },
        s => s,
    }
}

// ---------------------------------------------------------------- English

const EN_MALE: &[&str] = &[
    "James", "John", "Oliver", "George", "Michael", "David", "Liam", "Seán", "Daniel", "Thomas",
];
const EN_FEMALE: &[&str] = &[
    "Mary",
    "Emma",
    "Olivia",
    "Sophie",
    "Emily",
    "Aoife",
    "Sarah",
    "Grace",
    "Charlotte",
    "Chloé",
];
const EN_SURNAMES: &[&str] = &[
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Murphy",
    "O'Brien", "Walsh", "Johnson", "Miller", "Garcia", "Kelly",
];
const EN_STREETS: &[&str] = &[
    "High Street",
    "Church Road",
    "Station Road",
    "Main Street",
    "Oak Avenue",
    "Park Lane",
    "Maple Drive",
];

fn english(rng: &mut impl Rng, sex: Sex) -> Person {
    let first_name = pick(
        rng,
        if sex == Sex::Female {
            EN_FEMALE
        } else {
            EN_MALE
        },
    );
    let last_name = pick(rng, EN_SURNAMES);
    let street = format!("{} {}", rng.gen_range(1..250), pick(rng, EN_STREETS));
    let email_name = ascii_fold(&format!("{first_name}.{last_name}")).replace('\'', "");
    let (country, city, postal_code, phone, national_id) = match rng.gen_range(0..10) {
        0..=4 => gb_address(rng),
        5..=7 => us_address(rng),
        _ => ie_address(rng),
    };
    Person {
        first_name,
        last_name,
        email_name,
        phone,
        national_id,
        street,
        city,
        postal_code,
        country,
    }
}

type Address = (&'static str, &'static str, String, String, String);

fn letter(rng: &mut impl Rng) -> char {
    pick(rng, b"ABDEFGHJLNPQRSTUWXYZ".as_slice()) as char
}

fn gb_address(rng: &mut impl Rng) -> Address {
    const CITIES: &[(&str, &[&str])] = &[
        ("London", &["SW1A", "E1", "N1", "W1D", "SE1"]),
        ("Manchester", &["M1", "M4"]),
        ("Birmingham", &["B1", "B5"]),
        ("Leeds", &["LS1", "LS6"]),
        ("Glasgow", &["G1", "G12"]),
    ];
    let (city, districts) = pick(rng, CITIES);
    let postal = format!(
        "{} {}{}{}",
        pick(rng, districts),
        rng.gen_range(1..10),
        letter(rng),
        letter(rng)
    );
    // 07700 900xxx is Ofcom's range reserved for drama: never a real line.
    let phone = format!("+44 7700 900{}", digits(rng, 3));
    let prefix = pick(rng, &["AB", "CE", "JG", "KM", "NP", "SR", "TW", "YZ"]);
    let suffix = pick(rng, &['A', 'B', 'C', 'D']);
    let nino = format!(
        "{prefix} {} {} {} {suffix}",
        digits(rng, 2),
        digits(rng, 2),
        digits(rng, 2)
    );
    ("GB", city, postal, phone, nino)
}

fn us_address(rng: &mut impl Rng) -> Address {
    const CITIES: &[(&str, &str, &str)] = &[
        ("New York", "100", "212"),
        ("Chicago", "606", "312"),
        ("Austin", "787", "512"),
        ("Seattle", "981", "206"),
        ("Boston", "021", "617"),
    ];
    let (city, zip, area) = pick(rng, CITIES);
    // 555-01xx numbers are reserved for fiction; 9xx SSNs are never issued.
    let phone = format!("+1 {area} 555 01{}", digits(rng, 2));
    let ssn = format!("9{}-{}-{}", digits(rng, 2), digits(rng, 2), digits(rng, 4));
    ("US", city, format!("{zip}{}", digits(rng, 2)), phone, ssn)
}

fn ie_address(rng: &mut impl Rng) -> Address {
    const CITIES: &[(&str, &[&str])] = &[
        ("Dublin", &["D02", "D04", "D08"]),
        ("Cork", &["T12", "T23"]),
        ("Galway", &["H91"]),
        ("Limerick", &["V94"]),
    ];
    let (city, routing) = pick(rng, CITIES);
    let eircode = format!(
        "{} {}{}{}",
        pick(rng, routing),
        letter(rng),
        digits(rng, 2),
        letter(rng)
    );
    let phone = format!(
        "+353 8{} {} {}",
        pick(rng, &[3, 5, 6, 7]),
        digits(rng, 3),
        digits(rng, 4)
    );
    ("IE", city, eircode, phone, irish_ppsn(rng))
}

/// A PPS number: seven digits and a valid mod-23 check letter.
fn irish_ppsn(rng: &mut impl Rng) -> String {
    let body = digits(rng, 7);
    let check = ppsn_check(&body);
    format!("{body}{check}")
}

/// The mod-23 check letter of a 7-digit PPS number body.
fn ppsn_check(body: &str) -> char {
    match weighted_sum(body, (2..=8).rev()) % 23 {
        0 => 'W',
        r => char::from(b'A' + r as u8 - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::stream::Stream;

    #[test]
    fn check_digits_match_published_examples() {
        assert_eq!(chinese_id_check("11010519491231002"), 'X');
        assert_eq!(lithuanian_id_check("3330924006"), 4);
        assert_eq!(ppsn_check("1234567"), 'T');
    }

    #[test]
    fn chinese_id_encodes_area_birth_date_and_sex() {
        let mut rng = Stream::new(1, 0);
        let id = chinese_id("110105", Date::ymd(1949, 12, 31), Sex::Female, &mut rng);
        assert_eq!(id.len(), 18);
        assert_eq!(&id[..14], "11010519491231");
        assert_eq!((id.as_bytes()[16] - b'0') % 2, 0, "even sequence for women");
        assert_eq!(chinese_id_check(&id[..17]), id.chars().last().unwrap());
    }

    #[test]
    fn lithuanian_id_encodes_sex_and_birth_date() {
        let mut rng = Stream::new(2, 0);
        let id = lithuanian_id(Date::ymd(1987, 3, 9), Sex::Male, &mut rng);
        assert_eq!(id.len(), 11);
        assert_eq!(&id[..7], "3870309");
        let id = lithuanian_id(Date::ymd(2001, 11, 20), Sex::Female, &mut rng);
        assert_eq!(&id[..7], "6011120");
    }

    #[test]
    fn folds_lithuanian_letters_for_email() {
        assert_eq!(
            ascii_fold("Žygimantas.Stankevičienė"),
            "zygimantas.stankeviciene"
        );
    }
}
